//! `fincode-sidecar support-bundle --id <id>`: what FinCode support asks for about one
//! transaction (the id as the merchant knows it, when it happened, the error, the steps
//! that led to it), gathered from the audit trail and the webhook store and printed as
//! plain text to paste into an email to support.
//!
//! The trail holds resource ids as keyed pseudonyms, so the clear id is pseudonymised
//! with the sidecar's key and looked up with `fincode_audit::find`, as `audit find` does;
//! it is tried as every kind of id at once (correlation id, transaction id, reference,
//! customer code, idempotency key), and the bundle says which matched. The records found
//! name the transaction's other ids (a create's answer carries both its id and its
//! reference; a later call may use either in its path): one more lookup by those pulls in
//! every call and webhook about the same transaction, whichever id it used.
//!
//! Nothing secret can be in it: records hold no bodies, tokens or credentials (they were
//! redacted on the way in), stored events contribute only their ids, type, status and
//! delivery state (never their body or headers), and every value printed passes the
//! project's redactor once more. It reads files and a database only: it works beside a
//! running sidecar (SQLite is opened read-only, as `store status` does) or without one.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    path::Path,
    process::ExitCode,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use clap::Args;
use fincode_audit::{Query, Resource};
use fincode_config::{Config, Env, StoreBackend};
use fincode_redact::Redactor;
use fincode_store::{StoreError, StoredEvent, sqlite_events};
use secrecy::ExposeSecret as _;
use serde_json::{Map, Value};

/// Exit code for a config or usage that cannot work, as `check` and `run`.
const USAGE: u8 = 2;

/// A Postgres store is read through the trait's `list` (newest first): at most this many
/// events, which covers far more than `webhooks.retention` keeps for one merchant.
const POSTGRES_EVENTS: usize = 100_000;

/// Ids named by the records found first that are looked up again (one hop). A customer
/// code can match hundreds of transactions: past this many, the bundle lists what the
/// id itself matched and says it did not follow the rest.
const MAX_LINKED_IDS: usize = 32;

/// Free text from a stored event (its type, its status) is cut to this many bytes.
const MAX_EVENT_WORD: usize = 64;

/// Resource fields that link records about one transaction. Not `customer_code`: that
/// would pull in every transaction of the customer.
const LINKING_FIELDS: [&str; 4] = ["transaction_id", "reference", "path_id", "idempotency_key"];

#[derive(Args, Debug)]
pub(crate) struct SupportBundleArgs {
    /// The id as the merchant knows it: a correlation id (X-Request-ID), FinCode's
    /// transaction id, the reference, a customer code or an idempotency key.
    #[arg(long)]
    id: String,
    /// Only what happened at or after this time: RFC 3339 in UTC (2026-11-29T20:00:00Z),
    /// a date, or a duration back from now (`2h`, `3days`).
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
}

pub(crate) fn run(args: &SupportBundleArgs, config_path: &Path) -> ExitCode {
    let id = args.id.trim();
    if id.is_empty() {
        eprintln!("error: --id is empty; give a correlation id, transaction id or reference");
        return ExitCode::from(USAGE);
    }
    let since_ms = match args.since.as_deref().map(since_ms).transpose() {
        Ok(since) => since,
        Err(message) => {
            eprintln!("error: --since {message}");
            return ExitCode::from(USAGE);
        }
    };
    let env = Env::from_process();
    let config = match crate::store_cli::load_config(config_path, &env) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let redactor = match redactor(&config, &env) {
        Ok(redactor) => redactor,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(USAGE);
        }
    };
    if !config.audit.enabled && !config.webhooks.enabled {
        eprintln!(
            "error: {}: audit.enabled and webhooks.enabled are both false: the sidecar keeps no record to gather a bundle from",
            config_path.display()
        );
        return ExitCode::from(USAGE);
    }

    let mut bundle = Bundle::new(id, redactor);
    if config.audit.enabled {
        if let Err(error) = bundle.search_trail(&config.audit.dir, since_ms) {
            eprintln!(
                "error: reading the audit trail in {}: {error}",
                config.audit.dir.display()
            );
            return ExitCode::FAILURE;
        }
    } else {
        bundle.notes.push(
            "The audit trail is off (audit.enabled = false): no calls are listed.".to_owned(),
        );
    }
    if config.webhooks.enabled {
        let since = since_ms.map(|ms| UNIX_EPOCH + Duration::from_millis(ms));
        match read_events(&config, &env, since) {
            Ok(events) => bundle.match_events(events),
            Err(error) => {
                eprintln!("warning: the webhook store could not be read: {error}");
                bundle.notes.push(format!(
                    "The webhook store could not be read ({}); webhook events are not listed.",
                    bundle.redactor.text(&error.to_string())
                ));
            }
        }
    }

    if bundle.is_empty() {
        eprintln!(
            "nothing found for {:?}{}: no audit record or webhook event names it as a correlation id, transaction id, reference, customer code or idempotency key",
            bundle.redactor.text(id),
            args.since
                .as_deref()
                .map(|s| format!(" since {s}"))
                .unwrap_or_default()
        );
        return ExitCode::FAILURE;
    }
    print!("{}", bundle.render(&config, SystemTime::now()));
    ExitCode::SUCCESS
}

/// `--since`: an absolute time as `audit find` takes it, or a duration back from now.
fn since_ms(text: &str) -> Result<u64, String> {
    if let Ok(ago) = humantime::parse_duration(text) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        return Ok(u64::try_from(now.saturating_sub(ago).as_millis()).unwrap_or(u64::MAX));
    }
    crate::audit_cli::time_ms(text).map_err(|error| format!("{error}, or a duration such as 2h"))
}

/// The sidecar's pseudonyms need its hash key; without `redact.hash_key_env` in the
/// config the trail holds no pseudonym to look up (only correlation ids match). The key is
/// read as `run` reads it ([`Config::partial_secrets`]); the other secrets are not needed
/// here, so their variables may be unset.
fn redactor(config: &Config, env: &Env) -> Result<Redactor, String> {
    let Some(var) = &config.redact.hash_key_env else {
        return Ok(Redactor::builder().build());
    };
    let (secrets, _) = config.partial_secrets(env);
    let key = secrets.hash_key.ok_or_else(|| {
        format!(
            "the variable {var} (redact.hash_key_env) is not set; it holds the key the sidecar pseudonymised ids with, and ids cannot be looked up without it: run this where the sidecar's environment is (e.g. `kubectl exec` into its container)"
        )
    })?;
    Ok(crate::audit_cli::pseudonymiser(
        key.expose_secret().to_owned(),
    ))
}

/// The configured store's events received at or after `since`, oldest first.
fn read_events(
    config: &Config,
    env: &Env,
    since: Option<SystemTime>,
) -> Result<Vec<StoredEvent>, StoreError> {
    let secrets = config.store_secrets(env).map_err(|missing| {
        StoreError::open(
            "store",
            missing.first().map(ToString::to_string).unwrap_or_default(),
        )
    })?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| {
            StoreError::io("events", format!("cannot start the async runtime: {error}"))
                .caused_by(error)
        })?;
    runtime.block_on(async {
        match &config.store {
            StoreBackend::Sqlite { path } => sqlite_events(path, since).await,
            StoreBackend::Postgres(postgres) => {
                let password = secrets.store_password.as_ref();
                let store = crate::run::open_postgres(postgres, password).await?;
                let mut events = store.list(None, POSTGRES_EVENTS).await?;
                events.retain(|event| since.is_none_or(|since| event.received_at >= since));
                events.reverse();
                Ok(events)
            }
        }
    })
}

/// What was found about one id.
struct Bundle {
    /// The id as given.
    id: String,
    /// Its pseudonym (what the trail holds for it).
    pseudonym: String,
    redactor: Redactor,
    /// Records found, by `seq` (trail order).
    records: BTreeMap<u64, Map<String, Value>>,
    /// Pseudonyms of the ids that link records about the same transaction.
    linked: BTreeSet<String>,
    /// Stored webhook events about it.
    events: Vec<StoredEvent>,
    /// The stored events' clear ids that matched, for the header (`reference` ...).
    event_ids: BTreeSet<(&'static str, String)>,
    /// What the reader should know about gaps in the bundle.
    notes: Vec<String>,
}

// === impl Bundle ===

impl Bundle {
    fn new(id: &str, redactor: Redactor) -> Self {
        Self {
            id: id.to_owned(),
            pseudonym: redactor.pseudonym(id),
            redactor,
            records: BTreeMap::new(),
            linked: BTreeSet::new(),
            events: Vec::new(),
            event_ids: BTreeSet::new(),
            notes: Vec::new(),
        }
    }

    fn is_empty(&self) -> bool {
        self.records.is_empty() && self.events.is_empty()
    }

    /// Looks the id up as every kind, then the ids the records found name (one hop).
    fn search_trail(&mut self, dir: &Path, since_ms: Option<u64>) -> std::io::Result<()> {
        if !dir.is_dir() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no such directory; check audit.dir",
            ));
        }
        let base = Query {
            since_ms,
            ..Query::default()
        };
        self.find(
            dir,
            &Query {
                correlation_id: Some(self.id.clone()),
                ..base.clone()
            },
        )?;
        let pseudonym = self.pseudonym.clone();
        self.find_resource(dir, &base, &pseudonym)?;
        let mut linked: BTreeSet<String> = self
            .records
            .values()
            .flat_map(|record| linking_ids(record).map(str::to_owned).collect::<Vec<_>>())
            .collect();
        linked.insert(pseudonym.clone());
        if linked.len() > MAX_LINKED_IDS {
            self.notes.push(format!(
                "The id matched records about {} different transactions or keys; only those records are listed, not every other call about each.",
                linked.len()
            ));
        } else {
            for other in linked.iter().filter(|p| **p != pseudonym) {
                self.find_resource(dir, &base, other)?;
            }
        }
        self.linked = linked;
        Ok(())
    }

    /// Records naming `pseudonym` as any kind of resource id.
    fn find_resource(&mut self, dir: &Path, base: &Query, pseudonym: &str) -> std::io::Result<()> {
        for resource in [
            Resource::TransactionId,
            Resource::Reference,
            Resource::CustomerCode,
            Resource::IdempotencyKey,
        ] {
            self.find(
                dir,
                &Query {
                    resources: vec![(resource, pseudonym.to_owned())],
                    ..base.clone()
                },
            )?;
        }
        Ok(())
    }

    fn find(&mut self, dir: &Path, query: &Query) -> std::io::Result<()> {
        let records = &mut self.records;
        fincode_audit::find(dir, query, |line| {
            if let Ok(Value::Object(record)) = serde_json::from_str::<Value>(line) {
                // Every record carries its `seq`; a record without one is not from this
                // chain's writer, and is placed last rather than dropped.
                let seq = record
                    .get("seq")
                    .and_then(Value::as_u64)
                    .unwrap_or(u64::MAX - records.len() as u64);
                records.entry(seq).or_insert(record);
            }
        })?;
        Ok(())
    }

    /// Keeps the events about the transaction: received under a correlation id the trail
    /// recorded for it (or the one given), or naming one of its ids.
    fn match_events(&mut self, events: Vec<StoredEvent>) {
        let correlation_ids: BTreeSet<&str> = self
            .records
            .values()
            .filter(|record| record.get("kind").and_then(Value::as_str) == Some("webhook"))
            .filter_map(|record| record.get("correlation_id").and_then(Value::as_str))
            .chain([self.id.as_str()])
            .collect();
        let mut kept = Vec::new();
        for event in events {
            let body = serde_json::from_slice::<Value>(&event.body).unwrap_or(Value::Null);
            let ids = fincode_webhooks::event_resource_ids(&body);
            let names_it = ids.iter().any(|(_, clear)| {
                let pseudonym = self.redactor.pseudonym(clear);
                pseudonym == self.pseudonym || self.linked.contains(&pseudonym)
            });
            if names_it || correlation_ids.contains(event.correlation_id.as_str()) {
                for (name, clear) in ids {
                    self.event_ids
                        .insert((name, self.redactor.text(&clear).into_owned()));
                }
                kept.push(event);
            }
        }
        self.events = kept;
    }

    /// How the id matched: the record fields that held it.
    fn matched_as(&self) -> Vec<&'static str> {
        let mut kinds = BTreeSet::new();
        for record in self.records.values() {
            if record.get("correlation_id").and_then(Value::as_str) == Some(self.id.as_str()) {
                kinds.insert("correlation id");
            }
            let resources = record.get("resources").and_then(Value::as_object);
            for (field, value) in resources.into_iter().flatten() {
                if value.as_str() == Some(self.pseudonym.as_str()) {
                    kinds.insert(match field.as_str() {
                        "transaction_id" => "transaction id",
                        "reference" => "reference",
                        "customer_code" => "customer code",
                        "idempotency_key" => "idempotency key",
                        _ => "id in a request path (transaction id or reference)",
                    });
                }
            }
        }
        for event in &self.events {
            if event.correlation_id == self.id {
                kinds.insert("webhook correlation id");
            }
        }
        for (name, clear) in &self.event_ids {
            if clear == &self.id {
                kinds.insert(if *name == "reference" {
                    "reference"
                } else {
                    "transaction id"
                });
            }
        }
        kinds.into_iter().collect()
    }

    fn calls(&self) -> impl Iterator<Item = &Map<String, Value>> {
        self.records
            .values()
            .filter(|record| text(record, "kind") == Some("http"))
    }

    /// The plain-text bundle.
    fn render(&self, config: &Config, now: SystemTime) -> String {
        let mut out = String::new();
        let r = &self.redactor;
        let matched = self.matched_as();
        let _ = writeln!(
            out,
            "FinCode support request, prepared by fincode-sidecar {} support-bundle",
            env!("CARGO_PKG_VERSION")
        );
        let _ = writeln!(out, "To: hello@fincode.co.uk");
        let _ = writeln!(out);
        let _ = writeln!(out, "Id given:        {}", r.text(&self.id));
        let _ = writeln!(
            out,
            "Matched as:      {}",
            if matched.is_empty() {
                "a related webhook event".to_owned()
            } else {
                matched.join(", ")
            }
        );
        for (name, clear) in &self.event_ids {
            let label = if *name == "reference" {
                "Reference:"
            } else {
                "Transaction id:"
            };
            let _ = writeln!(out, "{label:<17}{clear} (from FinCode's webhook)");
        }
        let _ = writeln!(out, "FinCode host:    {}", host(config));
        let (first, last) = self.span();
        let _ = writeln!(
            out,
            "First seen:      {}",
            first.unwrap_or_else(|| "-".into())
        );
        let _ = writeln!(
            out,
            "Last seen:       {}",
            last.unwrap_or_else(|| "-".into())
        );
        let _ = writeln!(
            out,
            "Prepared at:     {}",
            humantime::format_rfc3339_millis(now)
        );

        let correlation: BTreeSet<&str> = self
            .records
            .values()
            .filter_map(|record| text(record, "correlation_id"))
            .chain(self.events.iter().map(|e| e.correlation_id.as_str()))
            .collect();
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "Correlation ids to quote (X-Request-ID on the app's calls, on webhooks forwarded):"
        );
        for id in &correlation {
            let _ = writeln!(out, "  {}", r.text(id));
        }

        let calls: Vec<_> = self.calls().collect();
        let _ = writeln!(out);
        let _ = writeln!(out, "Calls to FinCode, in order ({}):", calls.len());
        if calls.is_empty() {
            let _ = writeln!(out, "  none in the audit trail");
        }
        for (n, call) in calls.iter().enumerate() {
            let _ = writeln!(out, "  {}. {}", n + 1, self.call_line(call));
        }

        let _ = writeln!(out);
        let _ = writeln!(out, "Webhook events from FinCode ({}):", self.events.len());
        if self.events.is_empty() {
            let _ = writeln!(out, "  none stored");
        }
        for event in &self.events {
            let _ = writeln!(out, "  {}", self.event_line(event));
        }

        let _ = writeln!(out);
        let _ = writeln!(out, "Error:");
        let failures: Vec<_> = calls
            .iter()
            .filter(|call| text(call, "outcome") != Some("success"))
            .collect();
        if failures.is_empty() {
            let _ = writeln!(out, "  no call failed");
        }
        for call in &failures {
            let _ = writeln!(out, "  {}", self.error_line(call));
        }
        for event in self.events.iter().filter(|e| e.last_error.is_some()) {
            let _ = writeln!(
                out,
                "  webhook evt_{}: delivery to the app {}: {}",
                event.uid,
                if event.status == fincode_store::Status::Dead {
                    "gave up (dead letter)"
                } else {
                    "failing"
                },
                r.text(event.last_error.as_deref().unwrap_or_default())
            );
        }

        let _ = writeln!(out);
        let _ = writeln!(out, "Steps to reproduce (edit before sending):");
        let mut step = 0;
        for call in &calls {
            step += 1;
            let answer = match text(call, "error") {
                Some(kind) => format!(
                    "the sidecar answered {} itself ({})",
                    call.get("status").and_then(Value::as_u64).unwrap_or(0),
                    r.text(kind)
                ),
                None => format!("FinCode's answer was {}", status_words(r, call)),
            };
            let _ = writeln!(
                out,
                "  {step}. At {} the app called {} (correlation id {}): {answer} after {} attempt(s).",
                text(call, "time").unwrap_or("-"),
                r.text(text(call, "action").unwrap_or("-")),
                r.text(text(call, "correlation_id").unwrap_or("-")),
                call.get("attempts").and_then(Value::as_u64).unwrap_or(1),
            );
        }
        for event in &self.events {
            step += 1;
            let _ = writeln!(
                out,
                "  {step}. At {} FinCode sent a {} webhook (status {}).",
                humantime::format_rfc3339_millis(event.received_at),
                event_word(r, &event.body, "eventType"),
                event_word(r, &event.body, "Status"),
            );
        }
        let _ = writeln!(out, "  Expected: <what the app expected>");
        let _ = writeln!(out, "  Actual:   <what happened instead>");

        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "Not included: request and response bodies, tokens, credentials and card data (the sidecar never records them). Of FinCode's error responses only the code is recorded, not the message (it may echo personal data): copy the message from the app's log of the response if support needs it."
        );
        for note in &self.notes {
            let _ = writeln!(out, "Note: {note}");
        }
        out
    }

    /// The first and last time anything happened, UTC with milliseconds.
    fn span(&self) -> (Option<String>, Option<String>) {
        let times = self
            .records
            .values()
            .filter_map(|record| record.get("time_ms").and_then(Value::as_u64))
            .chain(self.events.iter().map(|event| {
                event
                    .received_at
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            }));
        let (first, last) = times.fold((None, None), |(lo, hi): (Option<u64>, Option<u64>), t| {
            (
                Some(lo.map_or(t, |lo| lo.min(t))),
                Some(hi.map_or(t, |hi| hi.max(t))),
            )
        });
        let format = |ms: u64| {
            humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
        };
        (first.map(format), last.map(format))
    }

    fn call_line(&self, call: &Map<String, Value>) -> String {
        let r = &self.redactor;
        let mut line = format!(
            "{}  {}  -> {}  {}  attempts {}",
            text(call, "time").unwrap_or("-"),
            r.text(text(call, "action").unwrap_or("-")),
            call.get("status")
                .and_then(Value::as_u64)
                .map_or_else(|| "-".to_owned(), |s| s.to_string()),
            text(call, "outcome").unwrap_or("-"),
            call.get("attempts").and_then(Value::as_u64).unwrap_or(1),
        );
        if let Some(latency) = call.get("latency_ms").and_then(Value::as_f64) {
            let _ = write!(line, "  {latency} ms");
        }
        if let Some(kind) = text(call, "error") {
            let _ = write!(line, "  sidecar error {}", r.text(kind));
        }
        if let Some(code) = text(call, "fincode_code") {
            let _ = write!(line, "  FinCode code {}", r.text(code));
        }
        if let Some(response) = text(call, "response") {
            let _ = write!(line, "  response {}", r.text(response));
        }
        if let Some(id) = text(call, "correlation_id") {
            let _ = write!(line, "  correlation id {}", r.text(id));
        }
        line
    }

    fn event_line(&self, event: &StoredEvent) -> String {
        let r = &self.redactor;
        let mut line = format!(
            "evt_{}  {}  status {}  received {}  delivery attempts {}  {}",
            event.uid,
            event_word(r, &event.body, "eventType"),
            event_word(r, &event.body, "Status"),
            humantime::format_rfc3339_millis(event.received_at),
            event.attempts,
            event.status.as_str(),
        );
        if let Some(error) = &event.last_error {
            let _ = write!(line, "  last error {}", r.text(error));
        }
        let _ = write!(line, "  correlation id {}", r.text(&event.correlation_id));
        line
    }

    fn error_line(&self, call: &Map<String, Value>) -> String {
        let r = &self.redactor;
        let what = match text(call, "error") {
            Some(kind) => format!(
                "the sidecar answered {} itself ({}; x-sidecar-error: {})",
                call.get("status").and_then(Value::as_u64).unwrap_or(0),
                r.text(kind),
                r.text(kind)
            ),
            None => format!("FinCode answered {}", status_words(r, call)),
        };
        format!(
            "{} {}: {what}, after {} attempt(s) (correlation id {})",
            text(call, "time").unwrap_or("-"),
            r.text(text(call, "action").unwrap_or("-")),
            call.get("attempts").and_then(Value::as_u64).unwrap_or(1),
            r.text(text(call, "correlation_id").unwrap_or("-")),
        )
    }
}

/// The pseudonyms in `record` that link it to other records about the same transaction.
fn linking_ids(record: &Map<String, Value>) -> impl Iterator<Item = &str> {
    let resources = record.get("resources").and_then(Value::as_object);
    LINKING_FIELDS
        .iter()
        .filter_map(move |field| resources?.get(*field)?.as_str())
}

fn text<'a>(record: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    record.get(key).and_then(Value::as_str)
}

/// `503 (failure)`, `200 (success)`, `422 (failure, code VALIDATION_ERROR)` with
/// FinCode's error code when the trail has it.
fn status_words(redactor: &Redactor, call: &Map<String, Value>) -> String {
    let status = call
        .get("status")
        .and_then(Value::as_u64)
        .map_or_else(|| "no status".to_owned(), |s| s.to_string());
    let outcome = text(call, "outcome").unwrap_or("unknown");
    match text(call, "fincode_code") {
        Some(code) => format!("{status} ({outcome}, code {})", redactor.text(code)),
        None => format!("{status} ({outcome})"),
    }
}

/// A short word from an event body (its type, its status), redacted and bounded: never
/// more of the body than that.
fn event_word(redactor: &Redactor, body: &[u8], key: &str) -> String {
    let value = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|body| body.get(key).and_then(Value::as_str).map(str::to_owned));
    let Some(value) = value else {
        return "-".to_owned();
    };
    let mut end = value.len().min(MAX_EVENT_WORD);
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    redactor.text(&value[..end]).into_owned()
}

/// FinCode's host (which tenant), without the path.
fn host(config: &Config) -> String {
    config
        .upstream
        .base_url
        .host()
        .map_or_else(|| "-".to_owned(), str::to_owned)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn since_takes_a_time_a_date_or_a_duration_back() {
        assert_eq!(since_ms("2026-11-29T20:00:00Z").unwrap(), 1_795_982_400_000);
        assert_eq!(since_ms("2026-11-29").unwrap(), 1_795_910_400_000);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let two_hours = since_ms("2h").unwrap();
        assert!(now - two_hours >= 7_200_000 && now - two_hours < 7_260_000);
        assert!(since_ms("yesterday-ish").is_err());
    }

    #[test]
    fn linking_ids_leave_customer_codes_out() {
        let record: Map<String, Value> = serde_json::from_str(
            r#"{"resources":{"transaction_id":"hmac:t","reference":"hmac:r","customer_code":"hmac:c","path_id":"hmac:p"}}"#,
        )
        .unwrap();
        let ids: Vec<&str> = linking_ids(&record).collect();
        assert_eq!(ids, ["hmac:t", "hmac:r", "hmac:p"]);
    }

    #[test]
    fn an_event_word_is_bounded_and_redacted() {
        let redactor = Redactor::builder().build();
        let body = br#"{"eventType":"TRANSACTION_STATUS","Status":"4111111111111111"}"#;
        assert_eq!(
            event_word(&redactor, body, "eventType"),
            "TRANSACTION_STATUS"
        );
        assert!(!event_word(&redactor, body, "Status").contains("4111111111111111"));
        let long = format!(r#"{{"eventType":"{}"}}"#, "é".repeat(50));
        assert!(event_word(&redactor, long.as_bytes(), "eventType").len() <= MAX_EVENT_WORD);
        assert_eq!(event_word(&redactor, b"not json", "eventType"), "-");
    }
}
