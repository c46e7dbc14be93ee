//! The newtypes that validate configuration values as they are deserialized.
//!
//! Each newtype reads the raw TOML value, checks it, and either converts into the schema's
//! plain field type (`#[serde(deserialize_with = "via::<PositiveU32, _, _>")]`) or refuses it
//! with a [`Refusal`]: what was expected and how to fix it, and whether the value may be
//! shown back (not when it may be a secret). Plain `bool`, `String` and integer fields need
//! no newtype: serde reads them, and the loader words its errors.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderName, Uri};
use ipnet::IpNet;
use serde::de::{Deserialize, Deserializer, Error as _};
use toml::Value;

use crate::schema::FieldAction;
use crate::secrets::is_env_var_name;
use crate::template::{KeyTemplate, is_json_pointer};

/// Why a value was refused.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub(crate) message: String,
    pub(crate) fix: String,
    /// Whether the value may be shown back. False when it might be a secret.
    pub(crate) echo: bool,
}

/// Separates a refusal's parts on their way through serde's `Error::custom`, which only
/// carries text; [`Refusal::decode`] splits them again. Never typed in a config file.
const SEP: char = '\u{1f}';

impl Refusal {
    pub(crate) fn new(message: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            fix: fix.into(),
            echo: true,
        }
    }

    pub(crate) fn hiding_value(mut self) -> Self {
        self.echo = false;
        self
    }

    /// Reads back what [`Refusal`]'s `Display` wrote. Text from elsewhere becomes the
    /// message, hidden (it could quote the value).
    pub(crate) fn decode(text: &str) -> Self {
        let mut parts = text.split(SEP);
        match (parts.next(), parts.next(), parts.next()) {
            (Some(message), Some(fix), Some(echo)) => Self {
                message: message.to_owned(),
                fix: fix.to_owned(),
                echo: echo == "echo",
            },
            _ => {
                Self::new(text, "see config.example.toml, which documents every key").hiding_value()
            }
        }
    }
}

/// The wire form [`Refusal::decode`] reads.
impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let echo = if self.echo { "echo" } else { "hide" };
        write!(f, "{}{SEP}{}{SEP}{echo}", self.message, self.fix)
    }
}

/// Declares newtypes read through a parse function and converted into a plain type.
macro_rules! newtypes {
    ($($(#[$doc:meta])* $name:ident($inner:ty) = $parse:expr;)*) => {$(
        $(#[$doc])*
        pub(crate) struct $name($inner);

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let value = Value::deserialize(d)?;
                $parse(&value).map(Self).map_err(D::Error::custom)
            }
        }

        impl From<$name> for $inner {
            fn from(n: $name) -> Self {
                n.0
            }
        }
    )*};
}

newtypes! {
    /// A duration, zero allowed ("not at all").
    AnyDuration(Duration) = duration_or_zero;
    /// A duration above zero.
    PositiveDuration(Duration) = duration;
    /// `shutdown.grace`.
    ShutdownGrace(Duration) = shutdown_grace;
    /// `retry.budget_window`.
    BudgetWindow(Duration) = budget_window;
    /// A window rates are measured over.
    Window(Duration) = window;
    /// `webhooks.tolerance`.
    SignatureTolerance(Duration) = signature_tolerance;
    /// `webhooks.max_age`.
    EventMaxAge(Duration) = event_max_age;
    /// `webhooks.retention`.
    Retention(Duration) = retention;
    /// `webhooks.dedupe_retention`.
    DedupeRetention(Duration) = dedupe_retention;
    /// `audit.retention`.
    AuditRetention(Duration) = audit_retention;
    /// A count of at least 1.
    PositiveUsize(usize) = positive_count;
    /// A `u32` count of at least 1.
    PositiveU32(u32) = positive_count_u32;
    /// A route's own rate or burst.
    RouteRate(u32) = route_rate;
    /// A `u64` count of at least 1.
    PositiveU64(u64) = positive_u64;
    /// `retry.max_attempts`.
    MaxAttempts(u32) = max_attempts;
    /// `limits.max_request_body_bytes`.
    BodyBytes(u64) = body_bytes;
    /// `limits.max_request_header_bytes`.
    HeaderBytes(usize) = header_bytes;
    /// `webhooks.max_body_bytes`.
    WebhookBodyBytes(usize) = webhook_body_bytes;
    /// `webhooks.max_unverified_bytes`.
    UnverifiedBytes(usize) = unverified_bytes;
    /// `webhooks.delivery_concurrency`.
    DeliveryConcurrency(usize) = delivery_concurrency;
    /// `webhooks.max_attempts`.
    DeliveryAttempts(u32) = delivery_attempts;
    /// `store.pool_size`.
    PoolSize(u32) = pool_size;
    /// A ratio from 0.0 to 1.0.
    Ratio(f64) = ratio;
    /// `breaker.failure_ratio`.
    FailureRatio(f64) = failure_ratio;
    /// A listening address.
    Listen(SocketAddr) = socket_addr;
    /// `upstream.base_url`, normalised.
    HttpsBaseUrl(Uri) = base_url;
    /// An OTLP/HTTP endpoint.
    OtlpEndpoint(Uri) = otlp_endpoint;
    /// `webhooks.deliver_to`.
    DeliverTo(Uri) = deliver_to;
    /// A PEM CA bundle.
    CaFile(PathBuf) = pem_file;
    /// `webhooks.tls_cert_file`.
    TlsCertFile(PathBuf) = tls_cert_file;
    /// `webhooks.tls_key_file`.
    TlsKeyFile(PathBuf) = tls_key_file;
    /// `auth.public_key_file`.
    PublicKeyFile(PathBuf) = public_key_file;
    /// `audit.dir`.
    AuditDir(PathBuf) = audit_dir;
    /// `store.sqlite_path`.
    SqlitePath(PathBuf) = sqlite_path;
    /// The name of an environment variable (never the secret).
    EnvVarName(String) = env_var_name;
    /// A request header the credential (or device id) is sent in.
    AuthHeader(HeaderName) = header_name;
    /// `webhooks.signature_header`.
    SignatureHeader(String) = signature_header;
    /// `webhooks.signature_prefix`.
    SignaturePrefix(String) = signature_prefix;
    /// A non-secret header value.
    HeaderText(String) = header_value;
    /// `log.level`.
    LogLevel(String) = log_level;
    /// A FinCode API path.
    ApiPath(String) = api_path;
    /// A webhook listener path.
    WebhookPath(String) = webhook_path;
    /// `webhooks.confirm_status_pointer`.
    JsonPointer(String) = json_pointer;
    /// `store.url`.
    PostgresUrl(String) = postgres_url;
    /// `store.schema`.
    SqlIdentifier(String) = sql_identifier;
    /// `redact.headers`, `redact.query_params`.
    NameList(Vec<String>) = name_list;
    /// `redact.fields`.
    FieldActions(BTreeMap<String, FieldAction>) = field_actions;
    /// An allow-list entry.
    AllowedNet(IpNet) = ip_net;
    /// An event key template.
    EventKey(KeyTemplate) = key_template;
    /// `webhooks.confirm_path`.
    ConfirmPath(KeyTemplate) = confirm_path;
}

/// Headers the proxy itself manages; letting the config set them would break framing or routing.
const PROXY_MANAGED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
];

fn string(value: &Value) -> Result<String, Refusal> {
    value.as_str().map(str::to_owned).ok_or_else(|| {
        Refusal::new(
            format!("expected a string, found {}", a(value)),
            "write the value in double quotes",
        )
    })
}

fn non_negative(value: &Value) -> Result<u64, Refusal> {
    value
        .as_integer()
        .and_then(|n| u64::try_from(n).ok())
        .ok_or_else(|| {
            Refusal::new(
                format!("expected a non-negative integer, found {}", a(value)),
                "write a whole number without quotes, e.g. 64",
            )
        })
}

/// A count that must be at least 1, such as `limits.max_concurrent_requests`.
fn positive_count(value: &Value) -> Result<usize, Refusal> {
    let n = non_negative(value)?;
    let n = usize::try_from(n)
        .map_err(|_| Refusal::new("the number is too large", "use a smaller number"))?;
    match n {
        0 => Err(at_least_one()),
        n => Ok(n),
    }
}

/// A count held as `u32` (rates, thresholds); 0 allowed.
fn count_u32(value: &Value) -> Result<u32, Refusal> {
    let n = non_negative(value)?;
    u32::try_from(n).map_err(|_| {
        Refusal::new(
            format!("must be at most {}", u32::MAX),
            "use a smaller number",
        )
    })
}

/// A `u32` count that must be at least 1 (a burst, a failure threshold, a probe count).
fn positive_count_u32(value: &Value) -> Result<u32, Refusal> {
    match count_u32(value)? {
        0 => Err(at_least_one()),
        n => Ok(n),
    }
}

/// A route's own rate or burst: at least 1 (a route at 0/s would refuse every request to it).
fn route_rate(value: &Value) -> Result<u32, Refusal> {
    positive_count_u32(value).map_err(|refusal| Refusal {
        fix: format!(
            "{}; to lift this route's own limit, remove the route",
            refusal.fix
        ),
        ..refusal
    })
}

/// A whole number in `range`, else `message` and `fix`.
fn bounded<T: TryFrom<u64>>(
    value: &Value,
    range: RangeInclusive<u64>,
    message: &str,
    fix: &str,
) -> Result<T, Refusal> {
    let n = non_negative(value)?;
    range
        .contains(&n)
        .then(|| T::try_from(n).ok())
        .flatten()
        .ok_or_else(|| Refusal::new(message, fix))
}

fn at_least_one() -> Refusal {
    Refusal::new("must be at least 1", "write a whole number of 1 or more")
}

/// `retry.max_attempts`: tries per request, the first included.
fn max_attempts(value: &Value) -> Result<u32, Refusal> {
    bounded(
        value,
        1..=10,
        "must be between 1 and 10: 1 turns retries off, and more tries only prolong an \
         outage for the app",
        "set 3 (the default), or 1 to turn retries off",
    )
}

fn body_bytes(value: &Value) -> Result<u64, Refusal> {
    match non_negative(value)? {
        0 => Err(Refusal::new(
            "must be greater than 0: a zero limit would refuse every request with a body",
            "set a size in bytes, e.g. 10485760 (10 MiB)",
        )),
        n => Ok(n),
    }
}

fn header_bytes(value: &Value) -> Result<usize, Refusal> {
    bounded(
        value,
        1024..=1_048_576,
        "must be between 1024 and 1048576 bytes: smaller breaks ordinary requests, larger \
         lets one client pin a lot of memory",
        "set a size in that range, e.g. 65536",
    )
}

fn duration(value: &Value) -> Result<Duration, Refusal> {
    let parsed = duration_or_zero(value)?;
    if parsed.is_zero() {
        return Err(Refusal::new(
            "must be greater than zero",
            "set a positive duration, e.g. \"5s\"",
        ));
    }
    Ok(parsed)
}

/// `shutdown.grace`: 1 s to 10 min. Kubernetes kills the pod at its
/// `terminationGracePeriodSeconds` (30 s by default), so the grace must fit below it; a
/// grace of minutes only makes sense with a pod grace raised to match.
fn shutdown_grace(value: &Value) -> Result<Duration, Refusal> {
    let parsed = duration(value)?;
    if parsed < Duration::from_secs(1) || parsed > Duration::from_mins(10) {
        return Err(Refusal::new(
            "must be between 1s and 10m",
            "set it a few seconds below the pod's terminationGracePeriodSeconds, e.g. \"25s\"",
        ));
    }
    Ok(parsed)
}

/// A duration where zero is meaningful ("not at all"), such as `rate_limit.max_wait = "0s"`:
/// never wait for a turn.
fn duration_or_zero(value: &Value) -> Result<Duration, Refusal> {
    let expected = || {
        Refusal::new(
            format!(
                "expected a duration such as \"5s\" or \"250ms\", found {}",
                a(value)
            ),
            "write a number with a unit, in quotes: \"250ms\", \"5s\", \"1m\"",
        )
    };
    let text = value.as_str().ok_or_else(expected)?;
    humantime::parse_duration(text).map_err(|_| expected())
}

/// The retry budget's window: 1s to 1 min (the budget keeps ten slots across it; a
/// longer window would remember an outage long after it ended).
fn budget_window(value: &Value) -> Result<Duration, Refusal> {
    let parsed = window(value)?;
    if parsed > Duration::from_mins(1) {
        return Err(Refusal::new(
            "must be at most 1m",
            "set a window between \"1s\" and \"60s\", e.g. \"10s\"",
        ));
    }
    Ok(parsed)
}

/// A window that rates are measured over (retry budget, breaker failure ratio).
fn window(value: &Value) -> Result<Duration, Refusal> {
    at_least_a_second(
        value,
        "a shorter window holds too few requests to judge by",
        "set a window of a second or more, e.g. \"10s\"",
    )
}

/// `webhooks.tolerance`: signed timestamps are whole seconds, so anything shorter would refuse
/// honest events.
fn signature_tolerance(value: &Value) -> Result<Duration, Refusal> {
    at_least_a_second(
        value,
        "signed timestamps are whole seconds, so a shorter tolerance refuses honest events",
        "set \"5m\" (the default); lower it only if the clocks are tightly synchronised",
    )
}

/// `webhooks.max_age`: how long an undelivered event is retried before it is a dead letter.
fn event_max_age(value: &Value) -> Result<Duration, Refusal> {
    at_least_a_second(
        value,
        "a shorter age leaves no time for a single retry",
        "set how long the app may be down without losing events, e.g. \"24h\" (the default)",
    )
}

/// `webhooks.retention`: how long delivered events are kept. At least an hour, so a
/// FinCode redelivery soon after delivery is still recognised as a duplicate.
fn retention(value: &Value) -> Result<Duration, Refusal> {
    let parsed = duration(value)?;
    if parsed < Duration::from_hours(1) {
        return Err(Refusal::new(
            "must be at least 1h: a delivered event's dedupe key goes with it, and FinCode may \
             redeliver an event it already sent",
            "keep delivered events for days, e.g. \"7d\" (the default)",
        ));
    }
    Ok(parsed)
}

/// `webhooks.dedupe_retention`: how long a purged event's dedupe key is kept. At least an
/// hour, as `webhooks.retention`: FinCode redelivers soon after.
fn dedupe_retention(value: &Value) -> Result<Duration, Refusal> {
    let parsed = duration(value)?;
    if parsed < Duration::from_hours(1) {
        return Err(Refusal::new(
            "must be at least 1h: a redelivery or a replayed capture after the key is forgotten \
             is delivered to the app again",
            "keep dedupe keys for weeks, e.g. \"30d\" (the default); they hold no personal data",
        ));
    }
    Ok(parsed)
}

fn at_least_a_second(value: &Value, why: &str, fix: &str) -> Result<Duration, Refusal> {
    let parsed = duration(value)?;
    if parsed < Duration::from_secs(1) {
        return Err(Refusal::new(format!("must be at least 1s: {why}"), fix));
    }
    Ok(parsed)
}

fn socket_addr(value: &Value) -> Result<SocketAddr, Refusal> {
    let expected = || {
        Refusal::new(
            format!(
                "expected an IP address and port such as \"127.0.0.1:8080\", found {}",
                a(value)
            ),
            "write \"IP:port\" in quotes (host names are not resolved; IPv6 as \"[::1]:8080\")",
        )
    };
    value
        .as_str()
        .ok_or_else(expected)?
        .parse()
        .map_err(|_| expected())
}

/// Parses and normalises the FinCode base URL. The http-vs-`allow_insecure` rule needs another
/// key, so it is checked later; everything about the URL alone is checked here.
fn base_url(value: &Value) -> Result<Uri, Refusal> {
    const EXAMPLE: &str = "write the URL, e.g. \"https://acme.fincode.tech/api/v6/services\"";
    let text = value.as_str().ok_or_else(|| {
        Refusal::new(
            format!("expected a URL string, found {}", a(value)),
            EXAMPLE,
        )
    })?;

    // Check for user info before anything else can echo the value: it holds a password.
    if has_userinfo(text) {
        return Err(Refusal::new(
            "the URL contains a user name or password (value not shown); secrets are never \
             written in the config file",
            "remove the \"user:password@\" part; the sidecar authenticates with auth.mode and \
             auth.token_env",
        )
        .hiding_value());
    }
    // `http::Uri` silently drops a fragment, so look for it in the text.
    if text.contains('#') {
        return Err(Refusal::new(
            "a fragment (#...) has no meaning in an API base URL",
            "remove everything from '#'",
        ));
    }

    let uri: Uri = text
        .parse()
        .map_err(|err| Refusal::new(format!("not a valid URL: {err}"), EXAMPLE))?;
    let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) else {
        return Err(Refusal::new(
            "must be an absolute URL with a scheme and host",
            "start it with https://, e.g. \"https://acme.fincode.tech/api/v6/services\"",
        ));
    };
    if authority.host().is_empty() {
        return Err(Refusal::new("the URL has no host", EXAMPLE));
    }
    if *scheme != Scheme::HTTPS && *scheme != Scheme::HTTP {
        return Err(Refusal::new(
            "the scheme must be https",
            "use an https:// URL",
        ));
    }
    if uri.query().is_some() {
        return Err(Refusal::new(
            "a query string (?...) is not allowed in the base URL; the app's own query is \
             forwarded",
            "remove everything from '?'",
        ));
    }

    // Normalise: lower-case host (DNS is case-insensitive) and no trailing '/', so the proxy can
    // append the app's path without producing "//".
    let authority = Authority::try_from(authority.as_str().to_ascii_lowercase())
        .map_err(|err| Refusal::new(format!("not a valid host: {err}"), EXAMPLE))?;
    let path = uri.path().trim_end_matches('/');
    Uri::builder()
        .scheme(scheme.clone())
        .authority(authority)
        .path_and_query(if path.is_empty() { "/" } else { path })
        .build()
        .map_err(|err| Refusal::new(format!("not a valid URL: {err}"), EXAMPLE))
}

/// What a PEM file must hold, and what to tell the operator when it does not.
struct PemKind {
    /// Any one of these lines marks the right kind of block.
    markers: &'static [&'static str],
    /// "the file holds no ..." when none is found.
    missing: &'static str,
    /// The fix when the file cannot be read.
    unreadable_fix: &'static str,
    /// The fix when it holds the wrong thing.
    wrong_fix: &'static str,
}

/// A PEM CA bundle: checked now so a typo fails `check`, not the first TLS handshake.
fn pem_file(value: &Value) -> Result<PathBuf, Refusal> {
    pem(
        value,
        &PemKind {
            markers: &["-----BEGIN CERTIFICATE-----"],
            missing: "the file holds no PEM certificate (no \"-----BEGIN CERTIFICATE-----\" line)",
            unreadable_fix: "point it at a readable PEM CA bundle, or remove the key to trust only \
                             the public roots",
            wrong_fix: "use a PEM bundle; convert DER with `openssl x509 -inform der -in ca.der \
                        -out ca.pem`",
        },
    )
}

/// `webhooks.tls_cert_file`: the webhook listener's certificate chain.
fn tls_cert_file(value: &Value) -> Result<PathBuf, Refusal> {
    pem(
        value,
        &PemKind {
            markers: &["-----BEGIN CERTIFICATE-----"],
            missing: "the file holds no PEM certificate (no \"-----BEGIN CERTIFICATE-----\" line)",
            unreadable_fix: "point it at the listener's PEM certificate chain, or remove \
                             tls_cert_file and tls_key_file to serve plain HTTP behind a TLS \
                             ingress",
            wrong_fix: "use the certificate chain in PEM form, leaf first",
        },
    )
}

/// `webhooks.tls_key_file`: the private key for `tls_cert_file`. The path is not secret; the
/// file's contents are never read into a problem.
fn tls_key_file(value: &Value) -> Result<PathBuf, Refusal> {
    pem(
        value,
        &PemKind {
            markers: &[
                "-----BEGIN PRIVATE KEY-----",
                "-----BEGIN RSA PRIVATE KEY-----",
                "-----BEGIN EC PRIVATE KEY-----",
            ],
            missing: "the file holds no PEM private key (no \"-----BEGIN PRIVATE KEY-----\" line)",
            unreadable_fix: "point it at the PEM private key of tls_cert_file (readable by the \
                             sidecar's user)",
            wrong_fix: "use the certificate's private key in PEM form (PKCS#8, RSA or EC)",
        },
    )
}

/// Reads a PEM file now, so a typo fails `check` rather than the first TLS handshake.
fn pem(value: &Value, kind: &PemKind) -> Result<PathBuf, Refusal> {
    let path = PathBuf::from(string(value)?);
    let bytes = std::fs::read(&path).map_err(|err| {
        let message = if err.kind() == std::io::ErrorKind::NotFound {
            "file not found".to_owned()
        } else {
            format!("cannot read the file: {err}")
        };
        Refusal::new(message, kind.unreadable_fix)
    })?;
    let holds = |marker: &str| bytes.windows(marker.len()).any(|w| w == marker.as_bytes());
    if !kind.markers.iter().any(|marker| holds(marker)) {
        return Err(Refusal::new(kind.missing, kind.wrong_fix));
    }
    Ok(path)
}

fn header_name(value: &Value) -> Result<HeaderName, Refusal> {
    let name = HeaderName::try_from(string(value)?).map_err(|_| {
        Refusal::new(
            "not a valid HTTP header name",
            "use letters, digits and '-', e.g. \"X-Auth-Token\"",
        )
    })?;
    if is_proxy_managed_header(name.as_str()) {
        return Err(Refusal::new(
            "the proxy manages this header itself",
            "use the header FinCode expects the credential in, e.g. \"X-Auth-Token\"",
        ));
    }
    Ok(name)
}

/// A `*_env` value: the name of a variable, never the secret. Not echoed, because when it is
/// not a name it is most likely the secret pasted in by mistake.
fn env_var_name(value: &Value) -> Result<String, Refusal> {
    let name = string(value).map_err(Refusal::hiding_value)?;
    if !is_env_var_name(&name) {
        return Err(Refusal::new(
            "must name an environment variable (letters, digits and '_', not starting with a \
             digit, at most 128 characters), not hold the secret itself (value not shown)",
            "put the secret in an environment variable and write its name here, e.g. \
             \"FINCODE_API_TOKEN\"",
        )
        .hiding_value());
    }
    Ok(name)
}

/// A plausible `tracing` `EnvFilter` directive: comma-separated `level` or `target=level`.
/// Checked here so a typo fails `check` instead of silently logging nothing.
fn log_level(value: &Value) -> Result<String, Refusal> {
    const LEVELS: &[&str] = &["trace", "debug", "info", "warn", "error", "off"];
    let text = string(value)?;
    let refuse = |what: String| {
        Refusal::new(
            what,
            "use comma-separated `level` or `target=level` items, with level one of trace, \
             debug, info, warn, error, off; e.g. \"info,fincode_proxy=debug\"",
        )
    };
    if text.trim().is_empty() {
        return Err(refuse("must not be empty".to_owned()));
    }
    for item in text.split(',').map(str::trim) {
        let (target, level) = match item.split_once('=') {
            Some((target, level)) => (Some(target.trim()), level.trim()),
            None => (None, item),
        };
        if !LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
            return Err(refuse(format!("`{item}` does not end in a known level")));
        }
        let target_ok = |t: &str| {
            !t.is_empty()
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | ':' | '-' | '.'))
        };
        if target.is_some_and(|t| !target_ok(t)) {
            return Err(refuse(format!("`{item}` does not name a valid target")));
        }
    }
    Ok(text)
}

pub(crate) fn is_proxy_managed_header(name: &str) -> bool {
    PROXY_MANAGED_HEADERS.contains(&name.to_ascii_lowercase().as_str())
}

/// "a string", "an integer"...: for "expected X, found Y" messages.
pub(crate) fn a(value: &Value) -> &'static str {
    match value {
        Value::String(_) => "a string",
        Value::Integer(n) if *n < 0 => "a negative integer",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a date-time",
        Value::Array(_) => "an array",
        Value::Table(_) => "a table",
    }
}

/// A tenant RSA public key file: the bare Base64 of the DER SubjectPublicKeyInfo, as FinCode's
/// dashboard shows it, or PEM (SPKI `PUBLIC KEY` or PKCS#1 `RSA PUBLIC KEY`). Only the shape is
/// checked here; the auth crate parses the key itself at start-up.
fn public_key_file(value: &Value) -> Result<PathBuf, Refusal> {
    let path = PathBuf::from(string(value)?);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        Refusal::new(
            format!("cannot read the file: {e}"),
            "point it at the public key FinCode's dashboard shows for the tenant",
        )
    })?;
    let pem = text.contains("-----BEGIN PUBLIC KEY-----")
        || text.contains("-----BEGIN RSA PUBLIC KEY-----");
    if !pem && !is_bare_base64(&text) {
        return Err(Refusal::new(
            "the file holds neither Base64 nor a PEM public key",
            "paste the tenant's RSA public key from FinCode's dashboard (bare Base64 of the DER \
             SubjectPublicKeyInfo), or use PEM (\"-----BEGIN PUBLIC KEY-----\")",
        ));
    }
    Ok(path)
}

/// Base64 text, line breaks and blanks allowed, as a copied key looks.
fn is_bare_base64(text: &str) -> bool {
    let mut chars = text.chars().filter(|c| !c.is_ascii_whitespace()).peekable();
    chars.peek().is_some()
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '='))
}

/// A FinCode API path below `upstream.base_url`, like `/securitymanagement/login`.
fn api_path(value: &Value) -> Result<String, Refusal> {
    absolute_path(value, "/securitymanagement/login")
}

/// A path the webhook listener accepts, like `/webhooks/fincode`.
fn webhook_path(value: &Value) -> Result<String, Refusal> {
    absolute_path(value, "/webhooks/fincode")
}

fn absolute_path(value: &Value, example: &str) -> Result<String, Refusal> {
    let path = string(value)?;
    if !path.starts_with('/') || path.parse::<PathAndQuery>().is_err() || path.contains('?') {
        return Err(Refusal::new(
            format!("expected an absolute path such as \"{example}\""),
            "start it with '/', without a query string",
        ));
    }
    Ok(path)
}

/// A non-secret, printable header value such as a device id.
fn header_value(value: &Value) -> Result<String, Refusal> {
    let text = string(value)?;
    if text.is_empty() || http::HeaderValue::from_str(&text).is_err() {
        return Err(Refusal::new(
            "not a valid HTTP header value",
            "use printable ASCII without line breaks",
        ));
    }
    Ok(text)
}

/// `audit.dir`: a directory path, not empty.
fn audit_dir(value: &Value) -> Result<PathBuf, Refusal> {
    let text = string(value)?;
    if text.trim().is_empty() {
        return Err(Refusal::new(
            "must not be empty",
            "name a directory on a persistent volume, e.g. \"/var/lib/fincode-sidecar/audit\"",
        ));
    }
    Ok(PathBuf::from(text))
}

/// `audit.retention`: at least a minute; PCI DSS 10.5.1 asks for a year (a shorter one is
/// warned about by the loader).
fn audit_retention(value: &Value) -> Result<Duration, Refusal> {
    let parsed = duration(value)?;
    if parsed < Duration::from_mins(1) {
        return Err(Refusal::new(
            "must be at least 1m: segments would be deleted as soon as they close",
            "keep the trail at least a year (PCI DSS 10.5.1), e.g. \"400d\" (the default)",
        ));
    }
    Ok(parsed)
}

/// A positive 64-bit count.
fn positive_u64(value: &Value) -> Result<u64, Refusal> {
    match value.as_integer().and_then(|n| u64::try_from(n).ok()) {
        Some(n) if n > 0 => Ok(n),
        _ => Err(Refusal::new(
            format!("expected a positive integer, found {}", a(value)),
            "set a whole number above 0",
        )),
    }
}

/// A ratio such as a sampling share: a number from 0.0 to 1.0 (an integer 0 or 1 is fine).
fn ratio(value: &Value) -> Result<f64, Refusal> {
    let refuse = || {
        Refusal::new(
            format!("expected a number from 0.0 to 1.0, found {}", a(value)),
            "write a decimal such as 0.1 (one in ten) or 1.0 (all)",
        )
    };
    #[allow(clippy::cast_precision_loss)] // only 0 and 1 get this far
    let number = match value {
        Value::Float(f) => *f,
        Value::Integer(i @ (0 | 1)) => *i as f64,
        _ => return Err(refuse()),
    };
    if (0.0..=1.0).contains(&number) {
        Ok(number)
    } else {
        Err(refuse())
    }
}

/// `breaker.failure_ratio`: a share of failed requests in (0.0, 1.0].
fn failure_ratio(value: &Value) -> Result<f64, Refusal> {
    let share = ratio(value)?;
    if share <= 0.0 {
        return Err(Refusal::new(
            "must be greater than 0.0: at 0.0 the breaker would open without a single failure",
            "write a share such as 0.5 (half the requests failed); to switch the breaker off, \
             set breaker.enabled = false",
        ));
    }
    Ok(share)
}

/// A list of header names or query parameter names, lower-cased (both match
/// case-insensitively).
fn name_list(value: &Value) -> Result<Vec<String>, Refusal> {
    let refuse = || {
        Refusal::new(
            format!("expected a list of names, found {}", a(value)),
            "write a list of strings, e.g. [\"x-customer-pin\"]",
        )
    };
    let Value::Array(items) = value else {
        return Err(refuse());
    };
    items
        .iter()
        .map(|item| {
            let name = item.as_str().ok_or_else(refuse)?;
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            {
                return Err(Refusal::new(
                    format!("`{name}` is not a header or parameter name"),
                    "use letters, digits, '-', '_' and '.'",
                ));
            }
            Ok(name.to_ascii_lowercase())
        })
        .collect()
}

/// `redact.fields`: JSON key to action.
fn field_actions(value: &Value) -> Result<BTreeMap<String, FieldAction>, Refusal> {
    let fix = "write it as fields = { customerRef = \"hash\", secretAnswer = \"drop\" }, each \
               action one of \"drop\", \"mask\" or \"hash\"";
    let Value::Table(table) = value else {
        return Err(Refusal::new(
            format!(
                "expected a table of field names to actions, found {}",
                a(value)
            ),
            fix,
        ));
    };
    table
        .iter()
        .map(|(key, action)| {
            let action = match action.as_str() {
                Some("drop") => FieldAction::Drop,
                Some("mask") => FieldAction::Mask,
                Some("hash") => FieldAction::Hash,
                _ => {
                    return Err(Refusal::new(
                        format!("the action for `{key}` must be \"drop\", \"mask\" or \"hash\""),
                        fix,
                    ));
                }
            };
            Ok((key.clone(), action))
        })
        .collect()
}

/// An OTLP/HTTP endpoint: `http://` or `https://` (collectors usually listen in the pod or
/// cluster without TLS). User info is refused: collector credentials go in
/// `OTEL_EXPORTER_OTLP_HEADERS`.
fn otlp_endpoint(value: &Value) -> Result<Uri, Refusal> {
    http_url(
        value,
        "write the URL, e.g. \"http://otel-collector:4318/v1/traces\"",
        "remove it; put collector credentials in OTEL_EXPORTER_OTLP_HEADERS",
    )
}

/// `webhooks.deliver_to`: the app's webhook endpoint, usually plain HTTP on loopback. User info
/// is refused: the app knows a delivery is ours by its signature.
fn deliver_to(value: &Value) -> Result<Uri, Refusal> {
    http_url(
        value,
        "write the app's webhook URL, e.g. \"http://127.0.0.1:3000/webhooks/fincode\"",
        "remove it; the app tells deliveries are the sidecar's by their signature (see \
         webhooks.signing_secret_env)",
    )
}

/// An absolute `http://` or `https://` URL without user info.
fn http_url(value: &Value, example: &str, credentials_fix: &str) -> Result<Uri, Refusal> {
    let text = string(value)?;
    if has_userinfo(&text) {
        return Err(Refusal::new(
            "the URL contains a user name or password (value not shown)",
            credentials_fix,
        )
        .hiding_value());
    }
    let uri: Uri = text
        .parse()
        .map_err(|err| Refusal::new(format!("not a valid URL: {err}"), example))?;
    match (uri.scheme(), uri.authority()) {
        (Some(scheme), Some(authority))
            if (*scheme == Scheme::HTTP || *scheme == Scheme::HTTPS)
                && !authority.host().is_empty() =>
        {
            Ok(uri)
        }
        _ => Err(Refusal::new(
            "must be an absolute http:// or https:// URL",
            example,
        )),
    }
}

/// Whether a URL's authority carries `user:password@`. Checked on the text, before anything
/// can echo it.
pub(crate) fn has_userinfo(url: &str) -> bool {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    after_scheme
        .split(['/', '?', '#'])
        .next()
        .unwrap_or_default()
        .contains('@')
}

// --- webhooks ---

/// `webhooks.max_body_bytes`: FinCode's events are a few KiB; 64 MiB is a ceiling that still
/// stops one sender from pinning the sidecar's memory.
fn webhook_body_bytes(value: &Value) -> Result<usize, Refusal> {
    bounded(
        value,
        1..=64 * 1024 * 1024,
        "must be between 1 and 67108864 bytes (64 MiB): 0 refuses every event, and more \
         lets one sender pin a lot of memory",
        "set a size in bytes, e.g. 65536 (64 KiB, the default)",
    )
}

/// `webhooks.max_unverified_bytes`: the memory all unverified bodies may hold at once.
fn unverified_bytes(value: &Value) -> Result<usize, Refusal> {
    bounded(
        value,
        1..=1024 * 1024 * 1024,
        "must be between 1 and 1073741824 bytes (1 GiB)",
        "set a size in bytes, e.g. 8388608 (8 MiB, the default)",
    )
}

/// An allow-list entry: a CIDR range (`203.0.113.0/24`, `2001:db8::/32`) or a plain address,
/// which means that address alone (`/32` or `/128`).
fn ip_net(value: &Value) -> Result<IpNet, Refusal> {
    let expected = || {
        Refusal::new(
            format!(
                "expected an IP address or CIDR range such as \"203.0.113.0/24\", found {}",
                a(value)
            ),
            "write an address (\"203.0.113.7\", \"2001:db8::7\") or a range \
             (\"203.0.113.0/24\", \"2001:db8::/32\") in quotes",
        )
    };
    let text = value.as_str().ok_or_else(expected)?;
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| expected())
}

/// `webhooks.signature_header`, lower-cased (header names ignore case).
fn signature_header(value: &Value) -> Result<String, Refusal> {
    header_name(value)
        .map(|name| name.as_str().to_owned())
        .map_err(|refusal| Refusal {
            fix: "use the header the sender puts the signature in, e.g. \"X-Fincode-Signature\""
                .to_owned(),
            ..refusal
        })
}

/// `webhooks.signature_prefix`: compared byte for byte with the start of the header, so
/// printable ASCII only; empty means no prefix.
fn signature_prefix(value: &Value) -> Result<String, Refusal> {
    let text = string(value)?;
    if !text.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) {
        return Err(Refusal::new(
            "must be printable ASCII: it is compared byte for byte with the signature header",
            "write the prefix exactly as the header carries it, e.g. \"sha256=\", or \"\" for none",
        ));
    }
    Ok(text)
}

fn delivery_concurrency(value: &Value) -> Result<usize, Refusal> {
    bounded(
        value,
        1..=1024,
        "must be between 1 and 1024: 0 never delivers, and more only floods the app",
        "set 16 (the default); lower it if the app struggles with parallel deliveries",
    )
}

/// `webhooks.max_attempts`: deliveries per event before it is a dead letter.
fn delivery_attempts(value: &Value) -> Result<u32, Refusal> {
    bounded(
        value,
        1..=1000,
        "must be between 1 and 1000: 0 never delivers, and webhooks.max_age bounds the \
         retries anyway",
        "set 15 (the default); use webhooks.max_age to say how long to keep trying",
    )
}

/// An event key template (`webhooks.dedupe_key`, `webhooks.order_key`). Needs a placeholder:
/// without one every event gets the same key.
fn key_template(value: &Value) -> Result<KeyTemplate, Refusal> {
    let template = template(value)?;
    if !template.has_placeholder() {
        return Err(Refusal::new(
            "has no placeholder, so every event would get the same key",
            "build it from the event, e.g. \"{eventType}:{Reference}:{Status}\"",
        ));
    }
    if template.has_backslash_literal() {
        return Err(Refusal::new(
            "has a backslash outside its placeholders; keys use it to escape values",
            "separate the parts with another character, e.g. ':'",
        ));
    }
    Ok(template)
}

/// `webhooks.confirm_path`: a FinCode API path below `upstream.base_url`, its placeholders
/// filled from the event.
fn confirm_path(value: &Value) -> Result<KeyTemplate, Refusal> {
    let template = template(value)?;
    // Checked as a path with each placeholder standing for one plain segment.
    let filled = template.fill("x");
    if !filled.starts_with('/') || filled.contains('#') || filled.parse::<PathAndQuery>().is_err() {
        return Err(Refusal::new(
            "expected an absolute path such as \"/transactionmanagement/transactions/{Reference}\"",
            "start it with '/', with placeholders from the event where the path needs them",
        ));
    }
    Ok(template)
}

fn template(value: &Value) -> Result<KeyTemplate, Refusal> {
    KeyTemplate::parse(&string(value)?).map_err(|error| Refusal::new(error.message, error.fix))
}

/// `webhooks.confirm_status_pointer`: an RFC 6901 JSON pointer into FinCode's answer.
fn json_pointer(value: &Value) -> Result<String, Refusal> {
    let text = string(value)?;
    if !is_json_pointer(&text) {
        return Err(Refusal::new(
            "not a JSON pointer: it is empty (the whole document) or starts with '/', and each \
             '~' is followed by 0 or 1",
            "write the path to the status, e.g. \"/data/status\"",
        ));
    }
    Ok(text)
}

// --- store ---

/// `store.sqlite_path`: the SQLite file. Its directory need not exist yet (a volume may be
/// mounted after `check` runs); the store creates the file.
fn sqlite_path(value: &Value) -> Result<PathBuf, Refusal> {
    let text = string(value)?;
    if text.trim().is_empty() {
        return Err(Refusal::new(
            "must not be empty",
            "name the SQLite file, e.g. \"/var/lib/fincode-sidecar/fincode-sidecar.db\" on a \
             persistent volume",
        ));
    }
    Ok(PathBuf::from(text))
}

/// `store.url`: a Postgres connection URL, `postgres://user@host:port/database`.
///
/// Everything but the place to connect to has its own key, so the URL carries no
/// password (that would be a secret in the file) and no query parameters (`sslmode`,
/// `password`, pool settings...), which would silently override or contradict
/// `store.tls`, `store.password_env` and `store.pool_size`.
fn postgres_url(value: &Value) -> Result<String, Refusal> {
    const EXAMPLE: &str = "write it as \"postgres://sidecar@db.internal:5432/payments\"";
    let text = value.as_str().ok_or_else(|| {
        Refusal::new(
            format!("expected a URL string, found {}", a(value)),
            EXAMPLE,
        )
        .hiding_value()
    })?;
    let Some(rest) = text
        .strip_prefix("postgres://")
        .or_else(|| text.strip_prefix("postgresql://"))
    else {
        // Not echoed: whatever it is, it may hold a password in some other URL syntax.
        return Err(Refusal::new(
            "the scheme must be postgres:// or postgresql:// (value not shown)",
            EXAMPLE,
        )
        .hiding_value());
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    // Checked before anything can echo the value.
    if let Some((userinfo, _)) = authority.rsplit_once('@')
        && userinfo.contains(':')
    {
        return Err(Refusal::new(
            "the URL contains a password (value not shown); secrets are never written in the \
             config file",
            "remove \":password\" from the URL and put it in the variable store.password_env \
             names, e.g. password_env = \"FINCODE_STORE_PASSWORD\"",
        )
        .hiding_value());
    }
    if rest.contains('?') {
        // Not echoed: `?password=...` is a password too.
        return Err(Refusal::new(
            "query parameters are not allowed in store.url (value not shown)",
            "remove everything from '?' and use the store.* keys instead: store.tls and \
             store.ca_file for sslmode and sslrootcert, store.password_env for the password, \
             store.pool_size and store.schema",
        )
        .hiding_value());
    }
    if rest.contains('#') {
        return Err(Refusal::new(
            "a fragment (#...) has no meaning in a Postgres URL",
            "remove everything from '#'",
        ));
    }
    let hosts = authority
        .rsplit_once('@')
        .map_or(authority, |(_, hosts)| hosts);
    for host_port in hosts.split(',') {
        let (host, port) = split_host_port(host_port);
        if host.is_empty() {
            return Err(Refusal::new(
                "the URL names no host",
                "name the server, e.g. \"postgres://sidecar@db.internal:5432/payments\"",
            ));
        }
        if port.is_some_and(|p| p.parse::<u16>().map_or(true, |p| p == 0)) {
            return Err(Refusal::new(
                "the port must be a number from 1 to 65535",
                "write the server's port after the host, e.g. \"db.internal:5432\"",
            ));
        }
    }
    Ok(text.to_owned())
}

/// The hosts of a URL that [`postgres_url`] accepted (several for a multi-host URL),
/// without brackets or ports.
pub(crate) fn postgres_hosts(url: &str) -> Vec<&str> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let hosts = authority
        .rsplit_once('@')
        .map_or(authority, |(_, hosts)| hosts);
    hosts
        .split(',')
        .map(|host_port| split_host_port(host_port).0)
        .collect()
}

/// `host:port`, `[v6]:port`, `host` or `[v6]` into the host (unbracketed) and the port.
fn split_host_port(text: &str) -> (&str, Option<&str>) {
    if let Some(bracketed) = text.strip_prefix('[') {
        let (host, after) = bracketed.split_once(']').unwrap_or((bracketed, ""));
        return (host, after.strip_prefix(':'));
    }
    match text.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (text, None),
    }
}

/// `store.pool_size`: connections to Postgres. A handful serve thousands of events a second
/// (inserts are grouped); many replicas times a large pool would exhaust the server's
/// `max_connections`.
fn pool_size(value: &Value) -> Result<u32, Refusal> {
    bounded(
        value,
        1..=64,
        "must be between 1 and 64 connections",
        "set 8 (the default); the server's max_connections must cover every replica's pool",
    )
}

/// `store.schema`: a plain, unquoted SQL identifier, so it can be written into statements
/// as it is and means the same to every tool (`psql`, backups, grants).
fn sql_identifier(value: &Value) -> Result<String, Refusal> {
    let text = string(value)?;
    let mut chars = text.chars();
    let plain = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && text.len() <= 63;
    if !plain {
        return Err(Refusal::new(
            "must be a plain SQL identifier: a lower-case letter or '_', then lower-case \
             letters, digits or '_', at most 63 characters",
            "use a name such as \"fincode_sidecar\" (the default)",
        ));
    }
    Ok(text)
}
