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
        let mut action = String::with_capacity(method.len() + 1 + route.len());
        action.push_str(method);
        action.push(' ');
        action.push_str(route);
        self.start(Kind::Http, &action)
    }

    fn start(&self, kind: Kind, action: &str) -> Record {
        let now = SystemTime::now();
        let mut record = Record {
            auditor: self.clone(),
            fields: String::with_capacity(384),
            actor: String::new(),
            resources: String::new(),
        };
        record.key("kind");
        json::push_str(&mut record.fields, kind.as_str());
        record.key("time");
        let _ = write!(
            record.fields,
            "\"{}\"",
            humantime::format_rfc3339_millis(now)
        );
        record.key("time_ms");
        let ms = now
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let _ = write!(record.fields, "{ms}");
        record.key("action");
        json::push_str(&mut record.fields, action);
        if let Some(id) = &self.inner.actor {
            record.actor.push_str("\"id\":");
            json::push_str(&mut record.actor, id);
        }
        record
    }
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
        json::push_str(&mut self.fields, key);
        self.fields.push(':');
    }

    fn text_field(mut self, key: &str, value: &str) -> Self {
        self.key(key);
        let value = self.auditor.inner.redactor.text(value);
        json::push_str(&mut self.fields, &value);
        self
    }

    fn number(mut self, key: &str, value: impl std::fmt::Display) -> Self {
        self.key(key);
        let _ = write!(self.fields, "{value}");
        self
    }

    /// The request's correlation id (`X-Request-ID`).
    pub fn correlation_id(self, id: &str) -> Self {
        self.text_field("correlation_id", id)
    }

    /// The W3C trace id, in hex. Anything but 32 hex digits is not a trace id and is not
    /// recorded (so it never needs the redactor).
    pub fn trace_id(mut self, id: &str) -> Self {
        if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
            self.key("trace_id");
            json::push_str(&mut self.fields, id);
        }
        self
    }

    /// Where the call came from.
    pub fn peer(mut self, peer: SocketAddr) -> Self {
        if !self.actor.is_empty() {
            self.actor.push(',');
        }
        let _ = write!(self.actor, "\"peer\":\"{peer}\"");
        self
    }

    /// A resource id (`transaction_id`, `reference`, `customer_code`, `idempotency_key`,
    /// `path_id`), given in clear and recorded as its pseudonym. Empty values are skipped.
    pub fn resource(mut self, name: &'static str, clear: &str) -> Self {
        let clear = clear.trim();
        if !clear.is_empty() {
            if !self.resources.is_empty() {
                self.resources.push(',');
            }
            json::push_str(&mut self.resources, name);
            self.resources.push(':');
            let pseudonym = self.auditor.pseudonym(clear);
            json::push_str(&mut self.resources, &pseudonym);
        }
        self
    }

    /// Whether it worked: `success`, `failure` (FinCode or the app said no), `error` (the
    /// sidecar answered itself), or an event's own word.
    pub fn outcome(mut self, outcome: &'static str) -> Self {
        self.key("outcome");
        json::push_str(&mut self.fields, outcome);
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
    pub fn latency(self, latency: Duration) -> Self {
        let ms = (latency.as_secs_f64() * 1_000_000.0).round() / 1000.0;
        self.number("latency_ms", ms)
    }

    /// The sidecar's error kind (`upstream_timeout`, `circuit_open`, ...) or a rejection
    /// reason: a bounded word, never free text from outside.
    pub fn error(mut self, kind: &'static str) -> Self {
        self.key("error");
        json::push_str(&mut self.fields, kind);
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
        auditor.log().record_fields(fields)
    }

    /// Queues the record and resolves once it is on disk; [`Unavailable`] when the trail
    /// cannot take it.
    pub fn commit(self) -> impl Future<Output = Result<(), Unavailable>> + Send + use<> {
        let (auditor, fields) = self.into_parts();
        auditor.log().commit_fields(fields)
    }

    /// The record as it would be written (without `seq`/`prev`).
    pub fn into_map(self) -> Map<String, Value> {
        let (_, fields) = self.into_parts();
        serde_json::from_str(&format!("{{{fields}}}")).unwrap_or_default()
    }

    fn into_parts(mut self) -> (Auditor, String) {
        if !self.actor.is_empty() {
            let actor = std::mem::take(&mut self.actor);
            self.key("actor");
            let _ = write!(self.fields, "{{{actor}}}");
        }
        if !self.resources.is_empty() {
            let resources = std::mem::take(&mut self.resources);
            self.key("resources");
            let _ = write!(self.fields, "{{{resources}}}");
        }
        (self.auditor, self.fields)
    }
}
