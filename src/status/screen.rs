//! What the status screen says, computed from one scrape (totals since the sidecar
//! started) or two (rates over the interval between them), each line marked against the
//! launch-day thresholds the alert rules in `deploy/prometheus/alerts.yaml` use, so the
//! operator sees at a glance what is red.

use std::{
    fmt::Write as _,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use super::prom::{Exposition, bucket_delta, counter_delta, quantile};

/// More than this share of requests answered 5xx is red (`FincodeSidecarHighErrorRate`).
pub(crate) const ERROR_RATE_RED: f64 = 0.05;
/// A p99 above this is red (`FincodeSidecarHighLatencyP99`).
pub(crate) const P99_RED: Duration = Duration::from_secs(3);
/// A business success rate below this is amber (`FincodeTransactionSuccessRateLow`).
pub(crate) const TRANSACTION_SUCCESS_AMBER: f64 = 0.9;
/// A webhook backlog above this is amber (`FincodeWebhookQueueBacklog`).
pub(crate) const BACKLOG_AMBER: f64 = 1000.0;

/// Less than this left on the token while its renewal fails is red: the sidecar renews
/// `auth.refresh_before` (5 min) ahead, so a token this close to expiry will lapse.
pub(crate) const TOKEN_LEFT_RED: Duration = Duration::from_mins(2);

/// The app's requests through the sidecar, by status class.
const SERVER: &str = "http_server_request_duration_seconds";
/// When the FinCode token expires, and when it is renewed next (Unix seconds).
const TOKEN_EXPIRY: &str = "fincode_token_expiry_timestamp_seconds";
const TOKEN_REFRESH: &str = "fincode_token_refresh_timestamp_seconds";

/// How a line is marked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Mark {
    Ok,
    /// Worth a look (amber).
    Warn,
    /// Past a launch-day threshold (red).
    Red,
}

// === impl Mark ===

impl Mark {
    fn word(self) -> &'static str {
        match self {
            Self::Ok => "OK  ",
            Self::Warn => "WARN",
            Self::Red => "RED ",
        }
    }

    /// ANSI colour for a terminal.
    fn colour(self) -> &'static str {
        match self {
            Self::Ok => "\x1b[32m",
            Self::Warn => "\x1b[33m",
            Self::Red => "\x1b[1;31m",
        }
    }
}

/// One scrape of the admin port.
#[derive(Clone, Debug, Default)]
pub(crate) struct Scrape {
    /// `/metrics`, parsed.
    pub(crate) metrics: Exposition,
    /// `/readyz`: its status and body.
    pub(crate) ready: Option<(u16, String)>,
}

/// The window figures are computed over: the whole life of the sidecar, or the
/// interval since the previous scrape.
pub(crate) struct Window<'a> {
    now: &'a Exposition,
    before: Option<&'a Exposition>,
    /// The interval, for per-second rates.
    elapsed: Option<Duration>,
}

// === impl Window ===

impl<'a> Window<'a> {
    pub(crate) fn new(now: &'a Scrape, before: Option<&'a Scrape>, elapsed: Duration) -> Self {
        Self {
            now: &now.metrics,
            before: before.map(|b| &b.metrics),
            elapsed: before.map(|_| elapsed),
        }
    }

    /// How much counter `name` (with `filter`) grew in the window.
    pub(crate) fn count(&self, name: &str, filter: &[(&str, &str)]) -> f64 {
        let now = self.now.sum(name, filter);
        match self.before {
            Some(before) => counter_delta(now, before.sum(name, filter)),
            None => now,
        }
    }

    /// Per value of label `key` of counter `name`: how much each grew in the window.
    fn count_by(&self, name: &str, key: &str) -> Vec<(String, f64)> {
        self.now
            .by_label(name, key)
            .into_iter()
            .map(|(value, now)| {
                let before = self
                    .before
                    .map_or(0.0, |b| b.sum(name, &[(key, value.as_str())]));
                let grew = if self.before.is_some() {
                    counter_delta(now, before)
                } else {
                    now
                };
                (value, grew)
            })
            .collect()
    }

    /// The `q` quantile of histogram `name` over the window.
    pub(crate) fn quantile(&self, q: f64, name: &str) -> Option<f64> {
        let now = self.now.buckets(name);
        match self.before {
            Some(before) => quantile(q, &bucket_delta(&now, &before.buckets(name))),
            None => quantile(q, &now),
        }
    }

    /// `n` as a count and, over an interval, a rate.
    fn amount(&self, n: f64) -> String {
        match self.elapsed {
            Some(elapsed) if elapsed > Duration::ZERO => {
                format!("{n:.0} ({:.1}/s)", n / elapsed.as_secs_f64())
            }
            _ => format!("{n:.0}"),
        }
    }
}

/// The screen for `now` (and `before`, `elapsed` earlier, in `--watch`): plain text, with
/// ANSI colours when `colour`.
pub(crate) fn render(
    admin: &str,
    now: &Scrape,
    before: Option<&Scrape>,
    elapsed: Duration,
    colour: bool,
) -> String {
    let window = Window::new(now, before, elapsed);
    let mut lines: Vec<(Mark, &str, String)> = Vec::new();
    readiness(now, &mut lines);
    requests(&window, &mut lines);
    fincode(&window, now, &mut lines);
    webhooks(&window, &now.metrics, &mut lines);
    audit(&window, &now.metrics, &mut lines);

    let span = match (before, elapsed) {
        (Some(_), elapsed) => format!("last {:.1} s", elapsed.as_secs_f64()),
        (None, _) => "since the sidecar started".to_owned(),
    };
    let worst = lines
        .iter()
        .map(|(mark, ..)| *mark)
        .max()
        .unwrap_or(Mark::Ok);
    let mut out = format!(
        "fincode-sidecar status  {admin}  {}  ({span})\n",
        humantime::format_rfc3339_seconds(SystemTime::now())
    );
    for (mark, topic, text) in &lines {
        let word = if colour {
            format!("{}{}\x1b[0m", mark.colour(), mark.word())
        } else {
            mark.word().to_owned()
        };
        let _ = writeln!(out, "{word} {topic:<13}{text}");
    }
    let _ = writeln!(
        out,
        "overall: {}",
        match worst {
            Mark::Ok => "all clear",
            Mark::Warn => "worth a look (WARN)",
            Mark::Red => "action needed (RED)",
        }
    );
    out
}

type Lines<'a> = Vec<(Mark, &'a str, String)>;

fn readiness(now: &Scrape, lines: &mut Lines<'_>) {
    let Some((status, body)) = &now.ready else {
        lines.push((Mark::Red, "readiness", "/readyz did not answer".to_owned()));
        return;
    };
    let mut body_lines = body.lines().map(str::trim).filter(|l| !l.is_empty());
    let verdict = body_lines.next().unwrap_or("-");
    let mark = if *status == 200 { Mark::Ok } else { Mark::Red };
    lines.push((mark, "readiness", format!("{status} {verdict}")));
    for trouble in body_lines {
        lines.push((Mark::Warn, "", trouble.to_owned()));
    }
}

fn requests(window: &Window<'_>, lines: &mut Lines<'_>) {
    let count = format!("{SERVER}_count");
    let total = window.count(&count, &[]);
    let class = |c: &str| window.count(&count, &[("status_class", c)]);
    let (ok, c4, c5) = (class("2xx") + class("3xx"), class("4xx"), class("5xx"));
    let share = |n: f64| if total > 0.0 { n / total } else { 0.0 };
    let error_rate = share(c5);
    let mark = if error_rate > ERROR_RATE_RED {
        Mark::Red
    } else if c4 > 0.0 {
        Mark::Warn
    } else {
        Mark::Ok
    };
    lines.push((
        mark,
        "requests",
        format!(
            "{}  success {:.1} %  4xx {:.1} %  5xx {:.1} % (red above {:.0} %)",
            window.amount(total),
            100.0 * share(ok),
            100.0 * share(c4),
            100.0 * error_rate,
            100.0 * ERROR_RATE_RED
        ),
    ));
    let p50 = window.quantile(0.5, SERVER);
    let p99 = window.quantile(0.99, SERVER);
    let mark = if p99.is_some_and(|p| p > P99_RED.as_secs_f64()) {
        Mark::Red
    } else {
        Mark::Ok
    };
    lines.push((
        mark,
        "latency",
        format!(
            "p50 {}  p99 {} (red above {} s)",
            seconds(p50),
            seconds(p99),
            P99_RED.as_secs()
        ),
    ));
    let transactions = window.count("fincode_transactions_total", &[]);
    if transactions > 0.0 {
        let failed = window.count("fincode_transactions_total", &[("outcome", "failure")]);
        let rate = 1.0 - failed / transactions;
        let mark = if rate < TRANSACTION_SUCCESS_AMBER {
            Mark::Warn
        } else {
            Mark::Ok
        };
        lines.push((
            mark,
            "transactions",
            format!(
                "{} created, {:.1} % succeeded at FinCode ({failed:.0} failed)",
                window.amount(transactions),
                100.0 * rate
            ),
        ));
    }
}

fn fincode(window: &Window<'_>, now: &Scrape, lines: &mut Lines<'_>) {
    let retries = window.count("fincode_retries_total", &[]);
    let exhausted = window.count("fincode_retry_budget_exhausted_total", &[]);
    let reasons = nonzero(window.count_by("fincode_retries_total", "reason"));
    lines.push((
        if exhausted > 0.0 {
            Mark::Red
        } else if retries > 0.0 {
            Mark::Warn
        } else {
            Mark::Ok
        },
        "retries",
        format!(
            "{}{reasons}  budget exhausted {exhausted:.0}",
            window.amount(retries)
        ),
    ));
    let errors = nonzero(window.count_by("fincode_sidecar_errors_total", "kind"));
    if !errors.is_empty() {
        lines.push((
            Mark::Warn,
            "sidecar errs",
            format!("x-sidecar-error{errors}"),
        ));
    }
    let (mark, state) = match now.metrics.max("fincode_circuit_breaker_state") {
        Some(s) if s >= 2.0 => (Mark::Red, "open: requests fail fast with 503 circuit_open"),
        Some(s) if s >= 1.0 => (Mark::Warn, "half-open: probing FinCode"),
        Some(_) => (Mark::Ok, "closed"),
        None => (Mark::Warn, "unknown (no fincode_circuit_breaker_state)"),
    };
    lines.push((mark, "breaker", state.to_owned()));

    let refresh_failed = window.count("fincode_token_refreshes_total", &[("result", "failed")]);
    let refresh_ok = window.count("fincode_token_refreshes_total", &[("result", "ok")]);
    let login_failed = window.count("fincode_logins_total", &[("result", "failed")]);
    let login_ok = window.count("fincode_logins_total", &[("result", "ok")]);
    let rejected: Vec<String> = now
        .metrics
        .by_label("fincode_login_rejected", "reason")
        .into_iter()
        .filter(|(_, v)| *v >= 1.0)
        .map(|(reason, _)| reason)
        .collect();
    // `/readyz` says when the token is expired or its renewal failing; the metrics say
    // when it expires.
    let auth_trouble: Vec<&str> = now
        .ready
        .iter()
        .flat_map(|(_, body)| body.lines())
        .filter(|line| line.starts_with("auth:"))
        .collect();
    let (expiry_mark, token) = token_validity(&now.metrics, &auth_trouble, SystemTime::now());
    let mark = if !rejected.is_empty() || auth_trouble.iter().any(|l| l.contains("no valid")) {
        Mark::Red
    } else if refresh_failed > 0.0 || login_failed > 0.0 || !auth_trouble.is_empty() {
        expiry_mark.max(Mark::Warn)
    } else {
        expiry_mark
    };
    let mut text = format!(
        "{token}; logins {login_ok:.0} ok {login_failed:.0} failed; refreshes {refresh_ok:.0} ok {refresh_failed:.0} failed"
    );
    if !rejected.is_empty() {
        let _ = write!(text, "; LOGIN REJECTED: {}", rejected.join(", "));
    }
    lines.push((mark, "token", text));
}

/// The token's state as of `at`, from `fincode_token_expiry_timestamp_seconds` and
/// `fincode_token_refresh_timestamp_seconds` (login mode; 0 or absent when the expiry is
/// unknown: a static token, `auth.mode = "none"`, or no token yet) and `/readyz`'s `auth:`
/// lines: "valid, expires in 47m (renews at ...)". Red once expired, or with less than
/// [`TOKEN_LEFT_RED`] left while renewal fails. `at` is this machine's clock, which
/// is the sidecar's own in its pod (and NTP-synced elsewhere).
pub(crate) fn token_validity(
    metrics: &Exposition,
    auth_trouble: &[&str],
    at: SystemTime,
) -> (Mark, String) {
    let when = |name: &str| {
        // Whatever the scrape says, nothing here panics: a value that is no time is
        // "unknown".
        metrics
            .max(name)
            .filter(|secs| *secs > 0.0)
            .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
            .and_then(|since| UNIX_EPOCH.checked_add(since))
    };
    let trouble = auth_trouble.join("; ");
    let Some(expires) = when(TOKEN_EXPIRY) else {
        let text = if trouble.is_empty() {
            "valid (expiry not reported: a static token, or auth.mode \"none\")".to_owned()
        } else {
            trouble
        };
        return (Mark::Ok, text);
    };
    let failing = auth_trouble.iter().any(|l| l.contains("renewal failing"));
    let renewal = when(TOKEN_REFRESH).map_or_else(String::new, |renews| {
        let stamp = humantime::format_rfc3339_seconds(renews);
        if failing {
            format!(" (renewal failing; next try at {stamp})")
        } else if renews > at {
            format!(" (renews at {stamp})")
        } else {
            format!(" (renewal due since {stamp})")
        }
    });
    let (mark, mut text) = match expires.duration_since(at) {
        Ok(left) => (
            if failing && left < TOKEN_LEFT_RED {
                Mark::Red
            } else {
                Mark::Ok
            },
            format!("valid, expires in {}{renewal}", span(left)),
        ),
        Err(past) => (
            Mark::Red,
            format!("EXPIRED {} ago{renewal}", span(past.duration())),
        ),
    };
    if !trouble.is_empty() {
        let _ = write!(text, "; {trouble}");
    }
    (mark, text)
}

/// A countdown for people: `95s`, `47m`, `2h 05m`.
fn span(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        0..120 => format!("{secs}s"),
        120..3600 => format!("{}m", secs / 60),
        _ => format!("{}h {:02}m", secs / 3600, secs % 3600 / 60),
    }
}

fn webhooks(window: &Window<'_>, now: &Exposition, lines: &mut Lines<'_>) {
    if !now.has("fincode_webhook_queue_depth") {
        lines.push((Mark::Ok, "webhooks", "off".to_owned()));
        return;
    }
    let backlog = now.sum("fincode_webhook_queue_depth", &[]);
    let delivery =
        |result: &str| window.count("fincode_webhook_deliveries_total", &[("result", result)]);
    let (delivered, failed, dead) = (delivery("delivered"), delivery("failed"), delivery("dead"));
    let received = window.count("fincode_webhooks_received_total", &[]);
    let duplicates = window.count("fincode_webhooks_duplicates_total", &[]);
    let rejected = window.count("fincode_webhooks_rejected_total", &[]);
    let healthy = now
        .min("fincode_webhook_store_healthy")
        .is_none_or(|h| h >= 1.0);
    let mark = if !healthy || dead > 0.0 || failed > 0.0 {
        Mark::Red
    } else if backlog > BACKLOG_AMBER || rejected > 0.0 {
        Mark::Warn
    } else {
        Mark::Ok
    };
    lines.push((
        mark,
        "webhooks",
        format!(
            "backlog {backlog:.0}  delivered {delivered:.0}  failed deliveries {failed:.0}  dead letters {dead:.0}  received {} (duplicates {duplicates:.0})  rejected {rejected:.0}{}",
            window.amount(received),
            if healthy { "" } else { "  STORE UNHEALTHY" }
        ),
    ));
}

fn audit(window: &Window<'_>, now: &Exposition, lines: &mut Lines<'_>) {
    if !now.has("fincode_audit_available") {
        lines.push((Mark::Ok, "audit", "off".to_owned()));
        return;
    }
    let available = now.min("fincode_audit_available").is_some_and(|a| a >= 1.0);
    let queue = now.sum("fincode_audit_queue_depth", &[]);
    let lost = window.count("fincode_audit_records_lost_total", &[]);
    let failures = window.count("fincode_audit_write_failures_total", &[]);
    let written = window.count("fincode_audit_records_written_total", &[]);
    let mark = if !available || lost > 0.0 || failures > 0.0 {
        Mark::Red
    } else {
        Mark::Ok
    };
    lines.push((
        mark,
        "audit",
        format!(
            "{}  queue {queue:.0}  gaps (records lost) {lost:.0}  write/fsync failures {failures:.0}  records written {}",
            if available { "writable" } else { "NOT WRITABLE" },
            window.amount(written)
        ),
    ));
}

/// ` (a 3, b 1)` for the nonzero entries, or nothing.
fn nonzero(by: Vec<(String, f64)>) -> String {
    let mut parts: Vec<String> = by
        .into_iter()
        .filter(|(_, n)| *n > 0.0)
        .map(|(k, n)| format!("{k} {n:.0}"))
        .collect();
    parts.sort();
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join(", "))
    }
}

/// A latency for people: `850 ms`, `3.20 s`, or `-` without observations.
fn seconds(value: Option<f64>) -> String {
    match value {
        None => "-".to_owned(),
        Some(s) if s < 1.0 => format!("{:.0} ms", s * 1000.0),
        Some(s) => format!("{s:.2} s"),
    }
}

#[cfg(test)]
#[path = "screen_tests.rs"]
mod tests;
