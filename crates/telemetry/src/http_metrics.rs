//! The HTTP metric families, named after the OpenTelemetry semantic conventions
//! (`http.server.request.duration` becomes `http_server_request_duration_seconds`).

use std::{
    cell::RefCell,
    sync::atomic::{AtomicU64, Ordering},
    time::{SystemTime, UNIX_EPOCH},
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

/// The semconv buckets for HTTP durations, in seconds.
pub const DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// Labels of the duration histograms. Every value is a static string from a bounded set.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// `GET`, `POST`... or `_OTHER` for anything unusual.
    pub method: &'static str,
    /// A route template such as `/transactionmanagement/transactions/{id}`, or `other`.
    pub route: &'static str,
    /// `1xx` .. `5xx`.
    pub status_class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// The reasons FinCode rejects a login (401, 403, 404), as `fincode_login_rejected` labels.
const LOGIN_REJECTIONS: [&str; 3] = ["bad_credentials", "locked", "unknown_user"];

/// The families the proxy records per request. Cheap to clone (all `Arc` inside).
#[derive(Clone, Debug)]
pub struct HttpMetrics {
    server_duration: Durations,
    client_duration: Durations,
    sidecar_errors: Family<KindLabel, Counter>,
    transactions: Family<OutcomeLabel, Counter>,
    token_refreshes: Family<ResultLabel, Counter>,
    logins: Family<ResultLabel, Counter>,
    login_rejected: Family<ReasonLabel, Gauge>,
    token_expiry: Gauge,
    token_refresh_at: Gauge,
}

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

/// A duration family, observed through a per-thread cache of its series.
///
/// `Family::get_or_create` hashes the three label strings with SipHash and takes the
/// family's lock on every call: two lookups per proxied request, about 1 100
/// instructions. A request's labels are static strings from small sets (a method, a
/// route template, a status class), so each thread keeps the few series it used, keyed
/// by where those strings are, and finds one by comparing a handful of integers. A
/// series is created through the family, as before, so what is exported is unchanged.
#[derive(Clone, Debug)]
struct Durations {
    family: Family<HttpLabels, Histogram, fn() -> Histogram>,
    /// This family's number in the per-thread caches: never reused, so a cache entry
    /// can never point into a family that was dropped and replaced.
    id: u64,
}

/// Series a thread caches at most (methods x routes x status classes it saw); past it
/// the cache starts again.
const CACHED_SERIES: usize = 64;

/// Numbers [`Durations`] apart.
static NEXT_FAMILY: AtomicU64 = AtomicU64::new(0);

/// A cached series: its family and its labels' addresses and lengths.
#[derive(Clone, Copy, PartialEq, Eq)]
struct SeriesKey {
    family: u64,
    labels: [(usize, usize); 3],
}

thread_local! {
    static SERIES: RefCell<Vec<(SeriesKey, Histogram)>> = const { RefCell::new(Vec::new()) };
}

impl Durations {
    fn new() -> Self {
        Self {
            family: Family::new_with_constructor(duration_histogram),
            id: NEXT_FAMILY.fetch_add(1, Ordering::Relaxed),
        }
    }

    fn observe(&self, labels: &HttpLabels, seconds: f64) {
        let at = |text: &'static str| (text.as_ptr().addr(), text.len());
        let key = SeriesKey {
            family: self.id,
            labels: [at(labels.method), at(labels.route), at(labels.status_class)],
        };
        SERIES.with_borrow_mut(|series| {
            if let Some((_, histogram)) = series.iter().find(|(cached, _)| *cached == key) {
                histogram.observe(seconds);
                return;
            }
            let histogram = self.family.get_or_create(labels).clone();
            histogram.observe(seconds);
            if series.len() >= CACHED_SERIES {
                series.clear();
            }
            series.push((key, histogram));
        });
    }
}

// === impl HttpMetrics ===

impl HttpMetrics {
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let this = Self {
            server_duration: Durations::new(),
            client_duration: Durations::new(),
            sidecar_errors: Family::default(),
            transactions: Family::default(),
            token_refreshes: Family::default(),
            logins: Family::default(),
            login_rejected: Family::default(),
            token_expiry: Gauge::default(),
            token_refresh_at: Gauge::default(),
        };
        registry.register(
            "http_server_request_duration_seconds",
            "Duration of the app's requests through the sidecar",
            this.server_duration.family.clone(),
        );
        registry.register(
            "http_client_request_duration_seconds",
            "Duration of each request try to FinCode",
            this.client_duration.family.clone(),
        );
        // prometheus-client appends `_total` to counters.
        registry.register(
            "fincode_sidecar_errors",
            "Errors the sidecar itself produced, by x-sidecar-error kind",
            this.sidecar_errors.clone(),
        );
        registry.register(
            "fincode_transactions",
            "FinCode create-transaction business outcomes (from the response body)",
            this.transactions.clone(),
        );
        registry.register(
            "fincode_token_refreshes",
            "FinCode token refreshes by result",
            this.token_refreshes.clone(),
        );
        registry.register(
            "fincode_logins",
            "FinCode logins by result",
            this.logins.clone(),
        );
        // A gauge, not a counter: a rejected login is not retried (it could extend a lock),
        // so a failure counter would stop growing while the credentials stay rejected.
        registry.register(
            "fincode_login_rejected",
            "1 while FinCode rejects the sidecar's login credentials, by reason (bad_credentials 401, locked 403, unknown_user 404); logins are then not retried",
            this.login_rejected.clone(),
        );
        // Timestamps, not "seconds left": a scrape stays true however late it is read,
        // and `time()` in PromQL (or `status`) turns them into a countdown. Always
        // present, 0 while unknown, so the series never vanishes under a dashboard.
        registry.register(
            "fincode_token_expiry_timestamp_seconds",
            "Unix time at which the sidecar's current FinCode access token expires (login mode; kept past expiry while renewal fails); 0 when unknown: static token or auth.mode none, or no token obtained yet",
            this.token_expiry.clone(),
        );
        registry.register(
            "fincode_token_refresh_timestamp_seconds",
            "Unix time of the sidecar's next FinCode token renewal: the refresh ahead of expiry, or after a failure the next attempt (login mode); 0 when unknown",
            this.token_refresh_at.clone(),
        );
        for reason in LOGIN_REJECTIONS {
            let _ = this.login_rejected.get_or_create(&ReasonLabel { reason });
        }
        // Every known label value exists from the start at 0, so `increase()` in an alert
        // sees the first event (a series born at 1 has no increase to show).
        for outcome in ["success", "failure"] {
            let _ = this.transactions.get_or_create(&OutcomeLabel { outcome });
        }
        for result in ["ok", "failed"] {
            let _ = this.token_refreshes.get_or_create(&ResultLabel { result });
            let _ = this.logins.get_or_create(&ResultLabel { result });
        }
        this
    }

    /// One app request finished after `seconds`.
    pub fn observe_server(&self, labels: &HttpLabels, seconds: f64) {
        self.server_duration.observe(labels, seconds);
    }

    /// One try to FinCode finished after `seconds`.
    pub fn observe_client(&self, labels: &HttpLabels, seconds: f64) {
        self.client_duration.observe(labels, seconds);
    }

    /// The sidecar produced an error of `kind` (the `x-sidecar-error` value).
    pub fn sidecar_error(&self, kind: &'static str) {
        self.sidecar_errors.get_or_create(&KindLabel { kind }).inc();
    }

    /// A create-transaction call ended in a business `success` or `failure`.
    pub fn transaction(&self, success: bool) {
        let outcome = if success { "success" } else { "failure" };
        self.transactions
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    /// A token refresh ended `ok` or `failed`.
    pub fn token_refresh(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.token_refreshes
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    /// A login ended `ok` or `failed`.
    pub fn login(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.logins.get_or_create(&ResultLabel { result }).inc();
    }

    /// FinCode rejects the login credentials for `reason` (`bad_credentials`, `locked`,
    /// `unknown_user`), or accepts them again (`None`).
    pub fn login_rejected(&self, reason: Option<&'static str>) {
        for known in LOGIN_REJECTIONS {
            let value = i64::from(reason == Some(known));
            self.login_rejected
                .get_or_create(&ReasonLabel { reason: known })
                .set(value);
        }
    }

    /// The token now expires at `expires_at` (`None`: no token yet) and is renewed next
    /// at `renews_at`.
    pub fn token_schedule(&self, expires_at: Option<SystemTime>, renews_at: SystemTime) {
        self.token_expiry.set(expires_at.map_or(0, unix_seconds));
        self.token_refresh_at.set(unix_seconds(renews_at));
    }
}

/// Whole seconds since the Unix epoch; 0 before it (a clock that far off is unknown).
fn unix_seconds(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |since| {
        i64::try_from(since.as_secs()).unwrap_or(i64::MAX)
    })
}

/// `2xx` for 200..=299 and so on; `5xx` for anything out of range.
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}
