//! What goes into a record, and the one door it goes through: every value a record
//! carries passes the redactor, and every resource id becomes the redactor's keyed
//! pseudonym, so the trail can link a customer's records and `audit find` can look them up
//! by a clear id, while no record names them.
//!
//! A record (PCI DSS 10.2.2) says who (`actor`: the app's configured identity and the
//! peer address), what (`kind` and `action`: method + route template, or an event name),
//! when (`time`, UTC with milliseconds, and `time_ms`), which resource (`resources`),
//! whether it worked (`outcome`, `status`, `error`), and how (`attempts`, `latency_ms`),
//! tied to the logs and traces by `correlation_id` and `trace_id`.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, SystemTime},
};

use fincode_redact::Redactor;
use serde_json::{Map, Value};

use std::fmt::Write as _;

use crate::{
    json,
    writer::{AuditLog, Unavailable},
};

/// What a record is about; the `kind` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An app call proxied to FinCode.
    Http,
    /// A webhook event: received, rejected, duplicate, delivered, dead, replayed.
    Webhook,
    /// A security event: a failed login or refresh, a refused route.
    Security,
    /// The sidecar itself: start, stop, config loaded, audit start and stop.
    Sidecar,
    /// An operator's action through the admin port.
    Admin,
}

impl Kind {
    /// The `kind` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Webhook => "webhook",
            Self::Security => "security",
            Self::Sidecar => "sidecar",
            Self::Admin => "admin",
        }
    }
}

/// Writes records into the trail. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Auditor {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    log: AuditLog,
    redactor: Redactor,
    actor: Option<String>,
    fail_closed: bool,
}

// === impl Auditor ===

impl Auditor {
    /// Records into `log`, every value through `redactor` (whose hash key makes the
    /// pseudonyms), on behalf of `actor` (`audit.actor`). With `fail_closed`, the proxy
    /// commits each record before the app's response completes and refuses calls while
    /// the trail cannot be written.
    pub fn new(
        log: AuditLog,
        redactor: Redactor,
        actor: Option<String>,
        fail_closed: bool,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                log,
                redactor,
                actor,
                fail_closed,
            }),
        }
    }

    /// `audit.fail_closed`.
    pub fn fail_closed(&self) -> bool {
        self.inner.fail_closed
    }

    /// Whether the trail can be written now.
    pub fn is_available(&self) -> bool {
        self.inner.log.is_available()
    }

    /// The writer, for its metrics and for stopping it.
    pub fn log(&self) -> &AuditLog {
        &self.inner.log
    }

    /// The pseudonym `resources` holds for the clear id `value`.
    pub fn pseudonym(&self, value: &str) -> String {
        self.inner.redactor.pseudonym(value)
    }

    /// A new record of `kind` for `action` (`webhook.received`, `sidecar.start`...),
    /// stamped with the time and the actor.
    pub fn record(&self, kind: Kind, action: &str) -> Record {
        self.start(kind, &self.inner.redactor.text(action))
    }

    /// A new record of an app call, its action `{method} {route}`: both are the sidecar's
    /// own bounded labels (a method name, a route template), so they need no redaction.
    pub fn record_call(&self, method: &'static str, route: &'static str) -> Record {
        self.start_parts(Kind::Http, &[method, " ", route], Action::Plain)
    }

    fn start(&self, kind: Kind, action: &str) -> Record {
        self.start_parts(kind, &[action], Action::Text)
    }

    /// A new record whose action is `action`'s parts joined (no string built for it).
    fn start_parts(&self, kind: Kind, action: &[&str], form: Action) -> Record {
        let now = SystemTime::now();
        let mut record = Record {
            auditor: self.clone(),
            // An app call's record is about 520 bytes: one allocation, no regrowth.
            fields: String::with_capacity(640),
            actor: String::new(),
            resources: String::new(),
        };
        record.key("kind");
        json::push_plain(&mut record.fields, kind.as_str());
        let ms = now
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let ms = u64::try_from(ms).unwrap_or(u64::MAX);
        record.key("time");
        push_utc_millis(&mut record.fields, ms);
        record.key("time_ms");
        record.fields.push_str(itoa::Buffer::new().format(ms));
        record.key("action");
        match form {
            Action::Plain => json::push_plains(&mut record.fields, action),
            Action::Text => json::push_strs(&mut record.fields, action),
        }
        if let Some(id) = &self.inner.actor {
            record.actor.reserve(id.len() + 40);
            json::push_key(&mut record.actor, "id");
            json::push_str(&mut record.actor, id);
        }
        record
    }
}

/// What a record's action is made of.
#[derive(Clone, Copy)]
enum Action {
    /// The sidecar's own labels (a method name, a route template): nothing to escape.
    Plain,
    /// Redacted text, which may hold anything.
    Text,
}

/// `id` without the whitespace around it, as `str::trim` has it, with the common case (an
/// id that starts and ends with a visible ASCII character) decided from two bytes: every
/// resource id of every record passes here.
pub fn trim_id(id: &str) -> &str {
    match (id.as_bytes().first(), id.as_bytes().last()) {
        (Some(first), Some(last)) if first.is_ascii_graphic() && last.is_ascii_graphic() => id,
        _ => id.trim(),
    }
}

/// Writes `latency` in milliseconds, rounded to whole microseconds, as the shortest
/// decimal (`2.715`, `2.7`, `3`): what a float would print, from integer arithmetic.
fn push_millis(out: &mut String, latency: Duration) {
    let micros = latency.as_secs() * 1_000_000
        + u64::from(latency.subsec_micros())
        + u64::from(latency.subsec_nanos() % 1000 >= 500);
    out.push_str(itoa::Buffer::new().format(micros / 1000));
    let mut fraction = micros % 1000;
    if fraction != 0 {
        let mut width = 3;
        while fraction.is_multiple_of(10) {
            fraction /= 10;
            width -= 1;
        }
        let mut digits = itoa::Buffer::new();
        let digits = digits.format(fraction);
        out.push('.');
        for _ in digits.len()..width {
            out.push('0');
        }
        out.push_str(digits);
    }
}

/// Writes `ms` since the epoch as a quoted RFC 3339 UTC time with milliseconds
/// (`"2026-11-29T23:48:32.882Z"`), the same text as `humantime::format_rfc3339_millis`.
fn push_utc_millis(out: &mut String, ms: u64) {
    out.push('"');
    push_rfc3339(out, Duration::from_millis(ms), Fraction::Millis);
    out.push('"');
}

/// How many fractional digits of a second [`push_rfc3339`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fraction {
    /// Three (`humantime::format_rfc3339_millis`; the trail's `time`).
    Millis,
    /// Six (`humantime::format_rfc3339_micros`; `tracing`'s JSON timestamps).
    Micros,
}

/// Writes `since_epoch` (UTC) as RFC 3339 with `fraction`'s digits, truncated, and no
/// quotes (`2026-11-29T23:48:32.882Z`): the text `humantime` gives, without the
/// formatting machinery, for every audit record and every access line.
pub fn push_rfc3339(out: &mut String, since_epoch: Duration, fraction: Fraction) {
    let secs = since_epoch.as_secs();
    let (days, of_day) = (secs / 86_400, secs % 86_400);
    // Days to a civil date (Howard Hinnant's `civil_from_days`), for days >= 0.
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    let mut text = *b"0000-00-00T00:00:00.000000Z";
    let mut put = |at: usize, width: usize, mut value: u64| {
        for slot in text[at..at + width].iter_mut().rev() {
            *slot = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(0, 4, year);
    put(5, 2, month);
    put(8, 2, day);
    put(11, 2, of_day / 3600);
    put(14, 2, of_day / 60 % 60);
    put(17, 2, of_day % 60);
    let len = match fraction {
        Fraction::Millis => {
            put(20, 3, u64::from(since_epoch.subsec_millis()));
            text[23] = b'Z';
            24
        }
        Fraction::Micros => {
            put(20, 6, u64::from(since_epoch.subsec_micros()));
            27
        }
    };
    // Only ASCII digits were written over ASCII.
    out.push_str(std::str::from_utf8(&text[..len]).unwrap_or("1970-01-01T00:00:00Z"));
}

/// One record being filled in; [`Record::write`] or [`Record::commit`] sends it.
///
/// The record is built as the JSON members it will be written as, once: no map to build,
/// serialise and drop per call. Each setter is called at most once per record.
#[derive(Debug)]
#[must_use = "a record is only in the trail once written or committed"]
pub struct Record {
    auditor: Auditor,
    /// `"kind":"http","time":...`: the members so far, without braces.
    fields: String,
    /// The members of `actor`.
    actor: String,
    /// The members of `resources`.
    resources: String,
}

// === impl Record ===

impl Record {
    /// Starts member `key` (a name from this crate's callers, never outside input).
    fn key(&mut self, key: &str) {
        debug_assert!(key != "seq" && key != "prev", "the chain owns {key}");
        if !self.fields.is_empty() {
            self.fields.push(',');
        }
        json::push_key(&mut self.fields, key);
    }

    fn text_field(mut self, key: &str, value: &str) -> Self {
        self.key(key);
        let value = self.auditor.inner.redactor.text(value);
        json::push_str(&mut self.fields, &value);
        self
    }

    fn number(mut self, key: &str, value: impl itoa::Integer) -> Self {
        self.key(key);
        self.fields.push_str(itoa::Buffer::new().format(value));
        self
    }

    /// The request's correlation id (`X-Request-ID`).
    pub fn correlation_id(self, id: &str) -> Self {
        self.text_field("correlation_id", id)
    }

    /// A correlation id the sidecar minted itself (a UUID): it holds nothing of the app's,
    /// so it skips the redactor's free-text pass (which every app-supplied id takes).
    pub fn minted_correlation_id(mut self, id: &str) -> Self {
        self.key("correlation_id");
        json::push_plain(&mut self.fields, id);
        self
    }

    /// The W3C trace id, in hex. Anything but 32 hex digits is not a trace id and is not
    /// recorded (so it never needs the redactor).
    pub fn trace_id(mut self, id: &str) -> Self {
        if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
            self.key("trace_id");
            json::push_plain(&mut self.fields, id);
        }
        self
    }

    /// Where the call came from.
    pub fn peer(mut self, peer: SocketAddr) -> Self {
        if !self.actor.is_empty() {
            self.actor.push(',');
        }
        json::push_key(&mut self.actor, "peer");
        self.actor.push('"');
        match peer {
            // The common case, without the formatting machinery.
            SocketAddr::V4(v4) => {
                let mut digits = itoa::Buffer::new();
                for (i, octet) in v4.ip().octets().into_iter().enumerate() {
                    if i > 0 {
                        self.actor.push('.');
                    }
                    self.actor.push_str(digits.format(octet));
                }
                self.actor.push(':');
                self.actor.push_str(digits.format(v4.port()));
            }
            SocketAddr::V6(v6) => {
                let _ = write!(self.actor, "{v6}");
            }
        }
        self.actor.push('"');
        self
    }

    /// A resource id (`transaction_id`, `reference`, `customer_code`, `idempotency_key`,
    /// `path_id`), given in clear and recorded as its pseudonym. Empty values are skipped.
    pub fn resource(mut self, name: &'static str, clear: &str) -> Self {
        let clear = trim_id(clear);
        if !clear.is_empty() {
            if self.resources.is_empty() {
                // Up to five ids of about 40 bytes each.
                self.resources.reserve(200);
            } else {
                self.resources.push(',');
            }
            json::push_key(&mut self.resources, name);
            // `hmac:` and hex digits, or `[REDACTED]`: nothing to escape.
            self.resources.push('"');
            self.auditor
                .inner
                .redactor
                .push_pseudonym(&mut self.resources, clear);
            self.resources.push('"');
        }
        self
    }

    /// Records under `name` the pseudonym already recorded under `earlier`: for an id the
    /// caller knows to be the same clear value (a transaction's id in the path and in
    /// FinCode's answer), without computing its HMAC twice. Nothing when `earlier` is not
    /// in the record.
    pub fn resource_as(mut self, name: &'static str, earlier: &'static str) -> Self {
        // Members are `"name":"value"`, written by `resource` alone: names are this
        // crate's callers' constants and values are pseudonyms (`hmac:` and hex, or
        // `[REDACTED]`), so no quote inside either.
        // So a comma only ever separates members: member by member, the one whose whole
        // name is `earlier`.
        let mut start = 0;
        let mut value = None;
        for member in self.resources.split(',') {
            let at = start;
            start += member.len() + 1;
            let Some(quoted) = member
                .strip_prefix('"')
                .and_then(|rest| rest.strip_prefix(earlier))
                .and_then(|rest| rest.strip_prefix("\":"))
                .filter(|quoted| {
                    quoted.len() >= 2 && quoted.starts_with('"') && quoted.ends_with('"')
                })
            else {
                continue;
            };
            let from = at + member.len() - quoted.len();
            value = Some(from + 1..at + member.len() - 1);
            break;
        }
        if let Some(value) = value {
            self.resources.push(',');
            json::push_key(&mut self.resources, name);
            self.resources.push('"');
            self.resources.extend_from_within(value);
            self.resources.push('"');
        }
        self
    }

    /// Whether it worked: `success`, `failure` (FinCode or the app said no), `error` (the
    /// sidecar answered itself), or an event's own word.
    pub fn outcome(mut self, outcome: &'static str) -> Self {
        self.key("outcome");
        json::push_plain(&mut self.fields, outcome);
        self
    }

    /// The HTTP status the caller got.
    pub fn status(self, status: u16) -> Self {
        self.number("status", status)
    }

    /// Tries sent to FinCode (or delivery attempts to the app).
    pub fn attempts(self, attempts: u32) -> Self {
        self.number("attempts", attempts)
    }

    /// How long it took, in milliseconds with microsecond precision.
    pub fn latency(mut self, latency: Duration) -> Self {
        self.key("latency_ms");
        push_millis(&mut self.fields, latency);
        self
    }

    /// The sidecar's error kind (`upstream_timeout`, `circuit_open`, ...) or a rejection
    /// reason: a bounded word, never free text from outside.
    pub fn error(mut self, kind: &'static str) -> Self {
        self.key("error");
        json::push_plain(&mut self.fields, kind);
        self
    }

    /// Another field. Strings pass the redactor's free-text rules; use it for bounded,
    /// non-personal values (a config digest, a segment number, a count).
    pub fn detail(self, key: &'static str, value: impl Into<Value>) -> Self {
        match value.into() {
            Value::String(text) => self.text_field(key, &text),
            other => {
                let mut this = self;
                this.key(key);
                this.fields.push_str(&other.to_string());
                this
            }
        }
    }

    /// Queues the record without waiting; `false` if it was lost (counted, and a gap
    /// record will say so).
    pub fn write(self) -> bool {
        let (auditor, fields) = self.into_parts();
        auditor.log().record_fields(&fields)
    }

    /// Queues the record and resolves once it is on disk; [`Unavailable`] when the trail
    /// cannot take it.
    pub fn commit(self) -> impl Future<Output = Result<(), Unavailable>> + Send + use<> {
        let (auditor, fields) = self.into_parts();
        auditor.log().commit_fields(&fields)
    }

    /// The record as it would be written (without `seq`/`prev`).
    pub fn into_map(self) -> Map<String, Value> {
        let (_, fields) = self.into_parts();
        serde_json::from_str(&format!("{{{fields}}}")).unwrap_or_default()
    }

    fn into_parts(mut self) -> (Auditor, String) {
        for (key, members) in [
            ("actor", std::mem::take(&mut self.actor)),
            ("resources", std::mem::take(&mut self.resources)),
        ] {
            if !members.is_empty() {
                self.key(key);
                self.fields.reserve(members.len() + 2);
                self.fields.push('{');
                self.fields.push_str(&members);
                self.fields.push('}');
            }
        }
        (self.auditor, self.fields)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use proptest::prelude::*;

    use super::{push_millis, push_utc_millis};

    /// The float formula the latency was written with before (and what a reader of the
    /// trail expects): microseconds, rounded, as a shortest decimal of milliseconds.
    fn float_latency(latency: Duration) -> String {
        let ms = (latency.as_secs_f64() * 1_000_000.0).round() / 1000.0;
        ms.to_string()
    }

    /// Half-up rounding to whole microseconds done on the decimal digits as text: an
    /// implementation that shares nothing with `push_millis` but the definition.
    fn decimal_latency(nanos: u64) -> String {
        let micros = (u128::from(nanos) + 500) / 1000;
        let text = format!("{}.{:03}", micros / 1000, micros % 1000);
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    }

    fn latency_text(latency: Duration) -> String {
        let mut out = String::new();
        push_millis(&mut out, latency);
        out
    }

    #[test]
    fn latency_is_the_shortest_decimal_of_whole_microseconds() {
        for (nanos, text) in [
            (2_715_000, "2.715"),
            (2_700_000, "2.7"),
            (3_000_000, "3"),
            (1_000, "0.001"),
            (10_000, "0.01"),
            (1_499, "0.001"),
            (1_500, "0.002"),
            (0, "0"),
            (12_345_678_900, "12345.679"),
            // A tie f64 gets wrong (CI found it): half a microsecond rounds up.
            (67_590_266_646_500, "67590266.647"),
        ] {
            assert_eq!(
                latency_text(Duration::from_nanos(nanos)),
                text,
                "{nanos} ns"
            );
        }
    }

    proptest! {
        #[test]
        fn rfc3339_micros_match_humantime(micros in 0_u64..253_402_300_799_999_999) {
            let at = Duration::from_micros(micros);
            let mut out = String::new();
            super::push_rfc3339(&mut out, at, super::Fraction::Micros);
            prop_assert_eq!(out, humantime::format_rfc3339_micros(UNIX_EPOCH + at).to_string());
        }

        #[test]
        fn trim_id_is_str_trim(id in "[ \\t\\n\u{a0}\u{2003}a-z0-9\u{e9}-]{0,12}") {
            prop_assert_eq!(super::trim_id(&id), id.trim());
        }

        #[test]
        fn utc_millis_match_humantime(ms in 0_u64..253_402_300_799_999) {
            let mut out = String::new();
            push_utc_millis(&mut out, ms);
            let expected = humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms));
            prop_assert_eq!(out, format!("\"{expected}\""));
        }

        #[test]
        fn latency_is_exact_half_up_rounding(nanos in 0_u64..86_400_000_000_000) {
            let latency = Duration::from_nanos(nanos);
            prop_assert_eq!(latency_text(latency), decimal_latency(nanos));
        }

        /// Away from a tie the float formula and ours agree; at an exact half
        /// microsecond (`nanos % 1000 == 500`) f64 cannot hold the tie (`x.5` in
        /// microseconds lands a hair either side) and rounds either way, so there
        /// the exact decimal above is the reference.
        #[test]
        fn latency_matches_the_float_formula_away_from_a_tie(
            nanos in (0_u64..86_400_000_000_000).prop_filter("a tie", |n| n % 1000 != 500)
        ) {
            let latency = Duration::from_nanos(nanos);
            prop_assert_eq!(latency_text(latency), float_latency(latency));
        }
    }

    #[test]
    fn utc_millis_at_the_edges_of_months_and_leap_years() {
        for ms in [
            0,
            951_782_400_000,     // 2000-02-29
            951_868_799_999,     // 2000-02-29T23:59:59.999
            4_107_542_400_000,   // 2100-03-01 (2100 is no leap year)
            1_795_996_112_882,   // 2026-11-29T23:48:32.882
            253_402_300_799_999, // 9999-12-31T23:59:59.999
        ] {
            let mut out = String::new();
            push_utc_millis(&mut out, ms);
            let expected = humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms));
            assert_eq!(out, format!("\"{expected}\""));
        }
    }
}
