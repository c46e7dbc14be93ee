#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]
//! Durable state for webhook events, behind one trait so the embedded SQLite file (one
//! pod) and Postgres (replicas sharing webhooks) are interchangeable.
//!
//! The contract every backend keeps, checked by one conformance suite
//! ([`conformance`]) that runs against each:
//!
//! - [`EventStore::insert`] returns only once the event is durably committed, and
//!   inserts the event and its dedupe key atomically: a second event with the same key is
//!   reported as a duplicate and never stored or delivered twice. Concurrent inserts are
//!   committed together (group commit), so durability costs one sync per batch.
//! - [`EventStore::claim_due`] hands out pending events whose time has come, each to one
//!   claimant at a time (a [`Lease`]), earliest due first, then oldest; with an ordering
//!   key, an event is not handed out while an earlier event with the same key is still
//!   pending (and not superseded: [`EventStore::mark_superseded`]). A claim counts the
//!   attempt, so a claimant that crashes mid-delivery still uses one up.
//! - Leases are fenced: every `mark_*` takes the lease it acts under and applies only if
//!   that lease is still the event's latest (not expired *and* claimed by someone else).
//!   It returns whether it applied; a claimant whose mark did not apply lost the event
//!   and records nothing about it.
//! - An event ends delivered or dead, never lost: a lease that expires (the claimant
//!   crashed) makes the event due again.
//! - Every stored event carries a UUIDv7 ([`StoredEvent::uid`]) minted by the store at
//!   insert, unique across stores and stable for the event's life.

/// The event columns both backends select, in the order their row decoders
/// (`sqlite::codec::event_from_row`, `postgres::event_from_row`) read them: one list, so
/// the schemas cannot drift apart (a macro so SQL strings can `concat!` it).
macro_rules! event_columns {
    () => {
        "id, dedupe_key, order_key, correlation_id, body, headers, received_at, status, \
         attempts, next_attempt_at, last_error, uid, pending_since"
    };
}

pub mod conformance;
mod health;
mod postgres;
mod sqlite;

use std::time::{Duration, SystemTime};

use bytes::Bytes;

pub use self::postgres::{PostgresOptions, PostgresStore, PostgresTls};
pub use self::sqlite::{
    SqliteStore,
    status::{StoreStatus, sqlite_events, sqlite_status},
};

/// Failed operations in a row after which a store that otherwise looks alive reports
/// itself unhealthy: one failure can be one bad command; several in a row cannot.
pub const UNHEALTHY_AFTER_FAILURES: u32 = 3;

/// A store's id for an event; increasing in arrival order, unique within one store only.
/// What leaves the sidecar is [`StoredEvent::uid`].
pub type EventId = i64;

/// Where an event is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    /// Waiting for (another) delivery attempt.
    Pending,
    /// The app acknowledged it (2xx).
    Delivered,
    /// Attempts or age ran out; kept for inspection and replay.
    Dead,
}

// === impl Status ===

impl Status {
    /// `pending`, `delivered` or `dead`: the spelling in the CLI, the admin API and the
    /// database.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Dead => "dead",
        }
    }

    /// The inverse of [`Status::as_str`].
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "pending" => Some(Self::Pending),
            "delivered" => Some(Self::Delivered),
            "dead" => Some(Self::Dead),
            _ => None,
        }
    }
}

/// A verified event as received, to be stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewEvent {
    /// The deduplication key (unique across the store).
    pub dedupe_key: String,
    /// Events with the same ordering key are delivered in arrival order; `None` for
    /// unordered delivery.
    pub order_key: Option<String>,
    /// The correlation id stamped at receipt, forwarded as `X-Request-ID`.
    pub correlation_id: String,
    /// The raw body, byte for byte as received (signatures are over these bytes).
    pub body: Bytes,
    /// The provider headers to forward to the app, in order.
    pub headers: Vec<(String, String)>,
    /// When the listener received it.
    pub received_at: SystemTime,
}

/// What [`EventStore::insert`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inserted {
    /// Stored and committed under this id.
    New(EventId),
    /// An event with the same dedupe key exists, or existed and was purged less than the
    /// dedupe retention ago (this id); nothing was stored.
    Duplicate(EventId),
}

/// An event as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEvent {
    /// The store's id.
    pub id: EventId,
    /// The event's globally unique id (a UUIDv7, minted when it was stored): the app sees
    /// it as `webhook-id: evt_<uid>` and deduplicates on it, so it must never repeat,
    /// even across database files, replicas or restarts, and never change for one event
    /// (attempts, restarts and replays keep it).
    pub uid: uuid::Uuid,
    /// The deduplication key.
    pub dedupe_key: String,
    /// The ordering key, if any.
    pub order_key: Option<String>,
    /// The correlation id from receipt.
    pub correlation_id: String,
    /// The raw body.
    pub body: Bytes,
    /// The provider headers to forward.
    pub headers: Vec<(String, String)>,
    /// When it was received.
    pub received_at: SystemTime,
    /// When it last became pending: `received_at`, or the last replay. `webhooks.max_age`
    /// counts from here, so a replayed old dead letter gets a fresh chance.
    pub pending_since: SystemTime,
    /// Where it is in its life.
    pub status: Status,
    /// Delivery attempts made so far.
    pub attempts: u32,
    /// When it is next due (pending events).
    pub next_attempt_at: SystemTime,
    /// Why the last attempt failed (a status code or an error kind; never a secret).
    pub last_error: Option<String>,
}

/// The right to record the outcome of one claim of one event: who claimed it and which
/// claim of that event this was. A later claim of the same event (after this one expired)
/// has a higher generation, and voids this one.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Lease {
    /// The event claimed.
    pub event: EventId,
    /// The claimant, as given to [`EventStore::claim_due`].
    pub owner: String,
    /// Increases with every claim of the event (a fencing token).
    pub generation: u64,
}

/// An event handed out by [`EventStore::claim_due`], with the lease it is held under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claimed {
    /// The event; its `attempts` already counts this claim.
    pub event: StoredEvent,
    /// What `mark_*` must present.
    pub lease: Lease,
}

/// Events per status, for the queue-depth gauge and the admin API.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Waiting for delivery.
    pub pending: u64,
    /// Delivered.
    pub delivered: u64,
    /// Dead letters.
    pub dead: u64,
}

// === impl Counts ===

impl Counts {
    /// Records `count` events of `status`, as the database spells it; any other spelling
    /// is passed over (both schemas' CHECK constraints keep them out).
    pub(crate) fn record(&mut self, status: &str, count: i64) {
        let count = u64::try_from(count).unwrap_or_default();
        match Status::parse(status) {
            Some(Status::Pending) => self.pending = count,
            Some(Status::Delivered) => self.delivered = count,
            Some(Status::Dead) => self.dead = count,
            None => {}
        }
    }
}

/// Whether a store can do its job, as far as it knows without a round trip (readiness
/// probes and a gauge read it often).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    /// Working: the last operations succeeded (or none failed yet).
    Healthy,
    /// Not working: why, in words for `/readyz` (names no event content).
    Unhealthy(String),
}

// === impl Health ===

impl Health {
    /// Whether it is [`Health::Healthy`].
    pub const fn is_healthy(&self) -> bool {
        matches!(self, Self::Healthy)
    }
}

/// A cause kept behind a [`StoreError`]: whatever the backend failed with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A store failure. Messages name the file or operation, never event content.
///
/// The message is the whole sentence an operator reads (`/readyz`, logs, `store status`
/// print it as it is), so it already says what the cause said; the cause itself is kept
/// as [`std::error::Error::source`] for code that classifies by type. A Postgres error
/// is kept only in its redacted form (message and SQLSTATE, never the values its
/// `DETAIL` names).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened or migrated.
    #[error("cannot open the webhook store at {path}: {detail}")]
    Open {
        /// The configured location.
        path: String,
        /// What went wrong, and the fix.
        detail: String,
        /// What the backend failed with, when something did.
        #[source]
        source: Option<BoxError>,
    },
    /// A read or write failed.
    #[error("webhook store {operation} failed: {detail}")]
    Io {
        /// Which operation.
        operation: &'static str,
        /// What went wrong.
        detail: String,
        /// What the backend failed with, when something did.
        #[source]
        source: Option<BoxError>,
    },
    /// The store is shutting down or its writer stopped.
    #[error("the webhook store is closed")]
    Closed,
}

// === impl StoreError ===

impl StoreError {
    /// The store at `path` cannot be opened: `detail` says why and what to do.
    pub fn open(path: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::Open {
            path: path.into(),
            detail: detail.into(),
            source: None,
        }
    }

    /// `operation` failed: `detail` says why.
    pub fn io(operation: &'static str, detail: impl Into<String>) -> Self {
        Self::Io {
            operation,
            detail: detail.into(),
            source: None,
        }
    }

    /// Keeps `cause` as this error's [`source`](std::error::Error::source).
    #[must_use]
    pub fn caused_by(mut self, cause: impl Into<BoxError>) -> Self {
        if let Self::Open { source, .. } | Self::Io { source, .. } = &mut self {
            *source = Some(cause.into());
        }
        self
    }
}

/// Durable webhook events. Cheap to share (`Arc<dyn EventStore>`).
#[async_trait::async_trait]
pub trait EventStore: Send + Sync + std::fmt::Debug + 'static {
    /// Commits `event` durably unless its dedupe key is already stored. Returns after
    /// the commit (the caller acknowledges the sender only then).
    async fn insert(&self, event: NewEvent) -> Result<Inserted, StoreError>;

    /// Leases up to `limit` pending events due at `now` (not leased by anyone else, and
    /// with no earlier pending event of the same ordering key) to `owner` until
    /// `now + lease`, earliest due first, then oldest (per-key order does not depend on
    /// it). Each claim adds one to the event's attempts and to
    /// its lease generation, in the same transaction.
    async fn claim_due(
        &self,
        now: SystemTime,
        limit: usize,
        lease: Duration,
        owner: &str,
    ) -> Result<Vec<Claimed>, StoreError>;

    /// The app acknowledged the event held under `lease`. Returns false, changing
    /// nothing, when the lease was lost (another claim of the event came after it) or the
    /// event is no longer pending.
    async fn mark_delivered(&self, lease: &Lease) -> Result<bool, StoreError>;

    /// The attempt under `lease` failed with `error`; due again at `next_attempt_at`.
    /// Releases the lease. Returns false, changing nothing, as
    /// [`EventStore::mark_delivered`] does.
    async fn mark_failed(
        &self,
        lease: &Lease,
        next_attempt_at: SystemTime,
        error: &str,
    ) -> Result<bool, StoreError>;

    /// The event held under `lease` is superseded (FinCode now reports a later status
    /// than the event's): it stays pending, due again at `next_attempt_at` with
    /// `last_error` "superseded", and no longer holds back later events of its ordering
    /// key (until a replay). Returns false, changing nothing, as
    /// [`EventStore::mark_delivered`] does.
    async fn mark_superseded(
        &self,
        lease: &Lease,
        next_attempt_at: SystemTime,
    ) -> Result<bool, StoreError>;

    /// Attempts or age ran out: the event held under `lease` becomes a dead letter.
    /// Returns false, changing nothing, as [`EventStore::mark_delivered`] does.
    async fn mark_dead(&self, lease: &Lease, error: &str) -> Result<bool, StoreError>;

    /// One event, whatever its status.
    async fn get(&self, id: EventId) -> Result<Option<StoredEvent>, StoreError>;

    /// Up to `limit` events, newest first, optionally of one status.
    async fn list(
        &self,
        status: Option<Status>,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError>;

    /// Makes a dead (or delivered) event pending again, due at `now` and pending since
    /// `now`, with its attempts and error reset. A pending event is left as it is.
    /// Returns false when no such event exists.
    async fn replay(&self, id: EventId, now: SystemTime) -> Result<bool, StoreError>;

    /// Makes every dead letter pending again as [`EventStore::replay`] does; returns how
    /// many.
    async fn replay_all_dead(&self, now: SystemTime) -> Result<u64, StoreError>;

    /// Events per status.
    async fn counts(&self) -> Result<Counts, StoreError>;

    /// Pending events only: what the queue-depth gauge shows, every second. A backend
    /// overrides it when counting one status is cheaper than [`EventStore::counts`],
    /// which also counts the delivered events kept for `webhooks.retention`.
    async fn count_pending(&self) -> Result<u64, StoreError> {
        Ok(self.counts().await?.pending)
    }

    /// When the longest-waiting pending event became pending (its `pending_since`), or
    /// `None` with nothing pending: how far behind delivery is, for `store status` and
    /// operators (an age that keeps growing is an app that stopped acknowledging).
    async fn oldest_pending(&self) -> Result<Option<SystemTime>, StoreError>;

    /// The store's health, from what it has seen (no I/O): unhealthy when it cannot serve
    /// (a writer thread gone, a closed store, a database refusing every call) until an
    /// operation succeeds again. A dead store makes the sidecar not ready: it would
    /// answer every webhook 503.
    fn health(&self) -> Health;

    /// Deletes delivered events received before `before` (retention: webhook bodies hold
    /// personal data, and the store must not grow without bound). Pending and dead events
    /// are kept. Returns how many were deleted.
    ///
    /// A deleted event's dedupe key outlives it as a tombstone (key and id, no content)
    /// while the event was received at or after `forget_keys_before`, so a captured
    /// request replayed after its body is gone is still reported a
    /// [`Inserted::Duplicate`] of the deleted id. Tombstones of events received before
    /// `forget_keys_before` are deleted (or never written).
    ///
    /// A shared store purges from one replica at a time: while another replica is
    /// purging, this call deletes nothing and returns 0 (the next hourly run catches up).
    async fn purge_delivered(
        &self,
        before: SystemTime,
        forget_keys_before: SystemTime,
    ) -> Result<u64, StoreError>;

    /// Wakes `wake` (`notify_one`) when any replica stores an event, so a dispatcher
    /// waiting for its next poll can claim at once. Polling stays the fallback: a
    /// backend may miss or merge wake-ups, and the default never wakes (one process
    /// that inserts can wake its own dispatcher).
    fn watch_inserts(&self, wake: std::sync::Arc<tokio::sync::Notify>) {
        let _ = wake;
    }
}
