//! Webhook events and admin replays, into the audit trail (DESIGN.md 5.4, PCI DSS 10.2).
//!
//! One record per event in an event's life: `webhook.received`, `webhook.rejected`,
//! `webhook.duplicate`, `webhook.delivered`, `webhook.dead`, `webhook.replayed`; and one
//! per operator act on the admin port, `admin.replay`, refused ones included: a refused
//! privileged action is exactly what an auditor looks for.
//!
//! Records never hold a body. The only values read from one are the resource ids
//! (`Reference`, `transactionId`), which [`fincode_audit::Record::resource`] turns into
//! keyed pseudonyms, and FinCode's `eventType`, bounded and redacted; and only from a
//! body whose signature checked out. A rejected request is recorded with its reason, its
//! status and where it came from, nothing it said about itself.
//!
//! Without an auditor every method returns at once: no parse, no allocation.

use std::{borrow::Cow, net::SocketAddr, time::Duration};

use fincode_audit::{Auditor, Kind, Record};
use fincode_store::{EventId, StoredEvent};
use serde_json::Value;

/// The most of FinCode's `eventType` a record keeps: event types are short words, and
/// a record must not become a channel for whatever a signed body carries.
const MAX_EVENT_TYPE: usize = 64;

/// Where a webhook came from, as the IP allow-list judged it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Source {
    /// The sender: the connection's peer, or, behind a trusted proxy, the address its
    /// `X-Forwarded-For` names, with port 0 (a proxy does not pass the source port on).
    pub(crate) addr: SocketAddr,
    /// The trusted proxy that forwarded it, when the sender is not the peer.
    pub(crate) via: Option<SocketAddr>,
}

/// How an admin caller was admitted (`authenticated_by`); never the credential itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AdmittedBy {
    /// The admin token, as a Bearer token.
    Token,
    /// Loopback (with the admin header for a state-changing route).
    Loopback,
}

impl AdmittedBy {
    fn as_str(self) -> &'static str {
        match self {
            Self::Token => "token",
            Self::Loopback => "loopback",
        }
    }
}

/// What an admin replay asked for: one event, or every dead letter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Replay {
    /// `POST /webhooks/events/{id}/replay`; `None` when the id is not a number.
    One(Option<EventId>),
    /// `POST /webhooks/dead/replay`.
    Dead,
}

/// The webhook crate's door to the audit trail; a no-op without an auditor. Cheap to
/// clone.
#[derive(Clone, Debug, Default)]
pub(crate) struct Audit {
    auditor: Option<Auditor>,
}

// === impl Audit ===

impl Audit {
    pub(crate) fn new(auditor: Option<Auditor>) -> Self {
        Self { auditor }
    }

    /// `webhook.received`: verified, committed as event `id`, answered 200.
    pub(crate) fn received(&self, source: Source, event: &Value, id: EventId, correlation: &str) {
        let Some(auditor) = &self.auditor else {
            return;
        };
        let record = from(auditor.record(Kind::Webhook, "webhook.received"), source)
            .correlation_id(correlation);
        about(record, event)
            .detail("event_id", id)
            .status(200)
            .outcome("success")
            .write();
    }

    /// `webhook.duplicate`: verified, but event `id` already holds it; answered 200 so
    /// FinCode stops sending it, and not delivered again.
    pub(crate) fn duplicate(&self, source: Source, event: &Value, id: EventId) {
        let Some(auditor) = &self.auditor else {
            return;
        };
        let record = from(auditor.record(Kind::Webhook, "webhook.duplicate"), source);
        about(record, event)
            .detail("event_id", id)
            .status(200)
            .outcome("success")
            .write();
    }

    /// `webhook.rejected`: refused with `status` for `reason` (the
    /// `fincode_webhooks_rejected{reason}` label). Nothing from the request itself: it was
    /// not verified.
    pub(crate) fn rejected(&self, source: Source, reason: &'static str, status: u16) {
        let Some(auditor) = &self.auditor else {
            return;
        };
        from(auditor.record(Kind::Webhook, "webhook.rejected"), source)
            .error(reason)
            .status(status)
            .outcome("failure")
            .write();
    }

    /// `webhook.delivered`: the app answered `status` (2xx) on attempt number
    /// `attempts`. `latency` is that attempt's (`latency_ms`), from its start to the app's
    /// answer, a confirm-by-query included: the cost of delivering, comparable with the
    /// proxy's records. `since_receipt` is the event's whole wait, receipt to that answer,
    /// retries included (`delivered_after_ms`).
    pub(crate) fn delivered(
        &self,
        event: &StoredEvent,
        attempts: u32,
        status: u16,
        latency: Duration,
        since_receipt: Duration,
    ) {
        let Some(auditor) = &self.auditor else {
            return;
        };
        let record = auditor
            .record(Kind::Webhook, "webhook.delivered")
            .correlation_id(&event.correlation_id);
        stored(record, event)
            .detail("event_id", event.id)
            .attempts(attempts)
            .status(status)
            .latency(latency)
            .detail("delivered_after_ms", millis(since_receipt))
            .outcome("success")
            .write();
    }

    /// `webhook.dead`: moved to the dead letters after `attempts` attempts, the last one
    /// failing for `reason` (with the app's `status` when it answered).
    pub(crate) fn dead(
        &self,
        event: &StoredEvent,
        attempts: u32,
        reason: &'static str,
        status: Option<u16>,
    ) {
        let Some(auditor) = &self.auditor else {
            return;
        };
        let mut record = auditor
            .record(Kind::Webhook, "webhook.dead")
            .correlation_id(&event.correlation_id);
        record = stored(record, event)
            .detail("event_id", event.id)
            .attempts(attempts)
            .error(reason)
            .outcome("failure");
        if let Some(status) = status {
            record = record.status(status);
        }
        record.write();
    }

    /// `webhook.replayed`: events due for delivery again by an operator's replay: event
    /// `id`, or `count` dead letters at once (the store replays those in one statement and
    /// does not name them).
    pub(crate) fn replayed(&self, replay: Replay, count: u64) {
        let Some(auditor) = &self.auditor else {
            return;
        };
        let record = auditor.record(Kind::Webhook, "webhook.replayed");
        let record = match replay {
            Replay::One(Some(id)) => record.detail("event_id", id),
            Replay::One(None) | Replay::Dead => record.detail("count", count),
        };
        record.outcome("success").write();
    }

    /// `admin.replay`: the operator's act, from `peer`, admitted by `admitted` (`None`
    /// when refused), answered `status`; `error` says why it did not happen, `count` how
    /// many events it made due (when it got that far).
    pub(crate) fn admin_replay(&self, caller: Caller, replay: Replay, answer: ReplayAnswer) {
        let Some(auditor) = &self.auditor else {
            return;
        };
        let mut record = auditor
            .record(Kind::Admin, "admin.replay")
            .peer(caller.peer);
        if let Some(admitted) = caller.admitted {
            record = record.detail("authenticated_by", admitted.as_str());
        }
        record = match replay {
            Replay::One(Some(id)) => record.detail("event_id", id),
            Replay::One(None) => record,
            Replay::Dead => record.detail("dead_letters", true),
        };
        if let Some(count) = answer.count {
            record = record.detail("count", count);
        }
        record = match answer.error {
            Some(error) => record.error(error).outcome("failure"),
            None => record.outcome("success"),
        };
        record.status(answer.status).write();
    }
}

/// Who asked for an admin replay.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Caller {
    pub(crate) peer: SocketAddr,
    /// `None` when nothing admitted the caller.
    pub(crate) admitted: Option<AdmittedBy>,
}

/// How an admin replay was answered.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ReplayAnswer {
    pub(crate) status: u16,
    /// Why it did not happen (`forbidden`, `unauthorized`, `not_found`, ...).
    pub(crate) error: Option<&'static str>,
    /// Events made due again.
    pub(crate) count: Option<u64>,
}

/// The sender, and the trusted proxy it came through.
fn from(record: Record, source: Source) -> Record {
    let record = record.peer(source.addr);
    match source.via {
        Some(via) => record.detail("via", via.to_string()),
        None => record,
    }
}

/// The resource ids an event carries, as its audit records name them (`reference`,
/// `transaction_id`), in clear: what `support-bundle` pseudonymises to link a stored event
/// to the calls about the same transaction, exactly as its records were linked.
pub fn event_resource_ids(event: &Value) -> Vec<(&'static str, Cow<'_, str>)> {
    [
        ("reference", field(event, &["Reference", "reference"])),
        (
            "transaction_id",
            field(event, &["transactionId", "TransactionId"]),
        ),
    ]
    .into_iter()
    .filter_map(|(name, id)| Some((name, id?)))
    .collect()
}

/// The resources and event type of a verified event.
fn about(mut record: Record, event: &Value) -> Record {
    for (name, id) in event_resource_ids(event) {
        record = record.resource(name, &id);
    }
    if let Some(kind) = event.get("eventType").and_then(Value::as_str) {
        record = record.detail("event_type", bounded(kind, MAX_EVENT_TYPE));
    }
    record
}

/// [`about`] a stored event; its body was verified before it was stored.
fn stored(record: Record, event: &StoredEvent) -> Record {
    match serde_json::from_slice::<Value>(&event.body) {
        Ok(body) => about(record, &body),
        Err(_) => record,
    }
}

/// The first of `names` that `event` holds as a string or a number.
fn field<'a>(event: &'a Value, names: &[&str]) -> Option<Cow<'a, str>> {
    names.iter().find_map(|name| match event.get(*name)? {
        Value::String(text) => Some(Cow::Borrowed(text.as_str())),
        Value::Number(number) => Some(Cow::Owned(number.to_string())),
        _ => None,
    })
}

/// At most `max` bytes of `text`, cut on a character boundary.
fn bounded(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_type_is_cut_to_the_bound_on_a_character_boundary() {
        assert_eq!(
            bounded("TRANSACTION_STATUS", MAX_EVENT_TYPE),
            "TRANSACTION_STATUS"
        );
        let long = "é".repeat(40); // 80 bytes
        let cut = bounded(&long, MAX_EVENT_TYPE);
        assert_eq!(cut.len(), MAX_EVENT_TYPE);
        assert_eq!(bounded(&long, 63).len(), 62, "not inside a character");
    }

    #[test]
    fn resource_ids_are_read_as_fincode_spells_them_strings_or_numbers() {
        let event = serde_json::json!({"reference": "PCN1", "transactionId": 42});
        assert_eq!(
            field(&event, &["Reference", "reference"]).as_deref(),
            Some("PCN1")
        );
        assert_eq!(field(&event, &["transactionId"]).as_deref(), Some("42"));
        assert_eq!(field(&event, &["customerCode"]), None);
    }
}
