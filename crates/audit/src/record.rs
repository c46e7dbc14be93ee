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

use crate::writer::{AuditLog, Unavailable};

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

    /// A new record of `kind` for `action` (`POST /transactionmanagement/transactions`,
    /// `webhook.received`...), stamped with the time and the actor.
    pub fn record(&self, kind: Kind, action: &str) -> Record {
        let now = SystemTime::now();
        let mut fields = Map::new();
        fields.insert("kind".into(), kind.as_str().into());
        fields.insert(
            "time".into(),
            humantime::format_rfc3339_millis(now).to_string().into(),
        );
        fields.insert("time_ms".into(), crate::writer::now_ms().into());
        fields.insert("action".into(), self.text(action).into());
        let mut actor = Map::new();
        if let Some(id) = &self.inner.actor {
            actor.insert("id".into(), id.clone().into());
        }
        Record {
            auditor: self.clone(),
            fields,
            actor,
            resources: Map::new(),
        }
    }

    fn text(&self, value: &str) -> String {
        self.inner.redactor.text(value).into_owned()
    }
}

/// One record being filled in; [`Record::write`] or [`Record::commit`] sends it.
#[derive(Debug)]
#[must_use = "a record is only in the trail once written or committed"]
pub struct Record {
    auditor: Auditor,
    fields: Map<String, Value>,
    actor: Map<String, Value>,
    resources: Map<String, Value>,
}

// === impl Record ===

impl Record {
    /// The request's correlation id (`X-Request-ID`).
    pub fn correlation_id(mut self, id: &str) -> Self {
        let id = self.auditor.text(id);
        self.fields.insert("correlation_id".into(), id.into());
        self
    }

    /// The W3C trace id, in hex.
    pub fn trace_id(mut self, id: &str) -> Self {
        let id = self.auditor.text(id);
        self.fields.insert("trace_id".into(), id.into());
        self
    }

    /// Where the call came from.
    pub fn peer(mut self, peer: SocketAddr) -> Self {
        self.actor.insert("peer".into(), peer.to_string().into());
        self
    }

    /// A resource id (`transaction_id`, `reference`, `customer_code`, `idempotency_key`,
    /// `path_id`), given in clear and recorded as its pseudonym. Empty values are skipped.
    pub fn resource(mut self, name: &'static str, clear: &str) -> Self {
        let clear = clear.trim();
        if !clear.is_empty() {
            let pseudonym = self.auditor.pseudonym(clear);
            self.resources.insert(name.into(), pseudonym.into());
        }
        self
    }

    /// Whether it worked: `success`, `failure` (FinCode or the app said no), `error` (the
    /// sidecar answered itself), or an event's own word.
    pub fn outcome(mut self, outcome: &'static str) -> Self {
        self.fields.insert("outcome".into(), outcome.into());
        self
    }

    /// The HTTP status the caller got.
    pub fn status(mut self, status: u16) -> Self {
        self.fields.insert("status".into(), status.into());
        self
    }

    /// Tries sent to FinCode (or delivery attempts to the app).
    pub fn attempts(mut self, attempts: u32) -> Self {
        self.fields.insert("attempts".into(), attempts.into());
        self
    }

    /// How long it took, in milliseconds with microsecond precision.
    pub fn latency(mut self, latency: Duration) -> Self {
        let ms = (latency.as_secs_f64() * 1_000_000.0).round() / 1000.0;
        self.fields.insert("latency_ms".into(), ms.into());
        self
    }

    /// The sidecar's error kind (`upstream_timeout`, `circuit_open`, ...) or a rejection
    /// reason: a bounded word, never free text from outside.
    pub fn error(mut self, kind: &'static str) -> Self {
        self.fields.insert("error".into(), kind.into());
        self
    }

    /// Another field. Strings pass the redactor's free-text rules; use it for bounded,
    /// non-personal values (a config digest, a segment number, a count).
    pub fn detail(mut self, key: &'static str, value: impl Into<Value>) -> Self {
        let value = match value.into() {
            Value::String(text) => Value::String(self.auditor.text(&text)),
            other => other,
        };
        self.fields.insert(key.into(), value);
        self
    }

    /// Queues the record without waiting; `false` if it was lost (counted, and a gap
    /// record will say so).
    pub fn write(self) -> bool {
        let (auditor, map) = self.into_parts();
        auditor.log().record(map)
    }

    /// Queues the record and resolves once it is on disk; [`Unavailable`] when the trail
    /// cannot take it.
    pub fn commit(self) -> impl Future<Output = Result<(), Unavailable>> + Send + use<> {
        let (auditor, map) = self.into_parts();
        auditor.log().commit(map)
    }

    /// The record as it would be written (without `seq`/`prev`).
    pub fn into_map(self) -> Map<String, Value> {
        self.into_parts().1
    }

    fn into_parts(mut self) -> (Auditor, Map<String, Value>) {
        if !self.actor.is_empty() {
            self.fields.insert(
                "actor".into(),
                Value::Object(std::mem::take(&mut self.actor)),
            );
        }
        if !self.resources.is_empty() {
            self.fields.insert(
                "resources".into(),
                Value::Object(std::mem::take(&mut self.resources)),
            );
        }
        (self.auditor, self.fields)
    }
}
