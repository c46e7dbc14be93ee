//! Everything the sandbox remembers: counters, the request log, transactions, lockouts.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::faults::{FaultBook, FaultKind};
use crate::keys::LoginKey;
use crate::lock;
use crate::tokens::Tokens;

/// How many requests `GET /requests` remembers.
pub(crate) const REQUEST_LOG_CAPACITY: usize = 10_000;

/// Consecutive failed logins after which an account is locked.
pub(crate) const LOCKOUT_THRESHOLD: u32 = 5;

/// A snapshot of what FinCode would have seen; `GET /counters` serves the same JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Requests received over TLS (every route, including echo and ping).
    pub requests_total: u64,
    /// TLS connections established (handshake completed).
    pub connections: u64,
    /// TLS handshakes that failed or timed out (e.g. the client did not trust the CA).
    pub tls_handshake_failures: u64,
    /// Plain-text HTTP requests sent to the TLS port (answered 400 and closed).
    pub plain_http_attempts: u64,
    /// Successful logins.
    pub logins_ok: u64,
    /// Failed logins of any kind (unknown user, bad password, locked, malformed).
    pub logins_failed: u64,
    /// Successful refreshes.
    pub refreshes_ok: u64,
    /// Refused refreshes (reused, unknown, expired, malformed).
    pub refreshes_failed: u64,
    /// Successful logouts.
    pub logouts: u64,
    /// Transactions created (first sight of an idempotency key).
    pub transactions_created: u64,
    /// Create-transaction calls answered from the idempotency store.
    pub idempotent_replays: u64,
    /// Side effects per idempotency key: anything above 1 would be a double payment.
    pub side_effects: BTreeMap<String, u64>,
    /// How often each fault kind was applied.
    pub faults_applied: FaultCounts,
}

/// Fault applications per kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultCounts {
    /// Latency faults applied.
    pub latency: u64,
    /// Status faults applied.
    pub status: u64,
    /// Reset faults applied.
    pub reset: u64,
    /// Stall faults applied.
    #[serde(default)]
    pub stall: u64,
}

/// One request as the sandbox saw it after TLS; `GET /requests` serves a list of these.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeenRequest {
    /// The method, e.g. `PUT`.
    pub method: String,
    /// Path and query as received.
    pub uri: String,
    /// `HTTP/1.1` or `HTTP/2.0`.
    pub version: String,
    /// Every header in order, as `[name, value]` (values decoded lossily as UTF-8).
    pub headers: Vec<(String, String)>,
    /// Request body bytes the handler read (the whole body once the response is complete).
    pub body_len: u64,
}

/// A logged request whose body length is still being counted while the body streams.
pub(crate) struct LoggedRequest {
    pub(crate) head: SeenRequest,
    pub(crate) body_len: Arc<AtomicU64>,
}

/// Hot-path counters are atomics: `/sandbox/ping` serves benchmarks and must not contend.
#[derive(Default)]
pub(crate) struct CounterCells {
    pub(crate) requests_total: AtomicU64,
    pub(crate) connections: AtomicU64,
    pub(crate) tls_handshake_failures: AtomicU64,
    pub(crate) plain_http_attempts: AtomicU64,
    pub(crate) logins_ok: AtomicU64,
    pub(crate) logins_failed: AtomicU64,
    pub(crate) refreshes_ok: AtomicU64,
    pub(crate) refreshes_failed: AtomicU64,
    pub(crate) logouts: AtomicU64,
    pub(crate) transactions_created: AtomicU64,
    pub(crate) idempotent_replays: AtomicU64,
    pub(crate) faults_latency: AtomicU64,
    pub(crate) faults_status: AtomicU64,
    pub(crate) faults_reset: AtomicU64,
    pub(crate) faults_stall: AtomicU64,
    pub(crate) side_effects: Mutex<BTreeMap<String, u64>>,
}

// === impl CounterCells ===

impl CounterCells {
    pub(crate) fn bump(cell: &AtomicU64) {
        cell.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn fault_applied(&self, kind: FaultKind) {
        Self::bump(match kind {
            FaultKind::Latency => &self.faults_latency,
            FaultKind::Status => &self.faults_status,
            FaultKind::Reset => &self.faults_reset,
            FaultKind::Stall => &self.faults_stall,
        });
    }

    fn cells(&self) -> [&AtomicU64; 15] {
        [
            &self.requests_total,
            &self.connections,
            &self.tls_handshake_failures,
            &self.plain_http_attempts,
            &self.logins_ok,
            &self.logins_failed,
            &self.refreshes_ok,
            &self.refreshes_failed,
            &self.logouts,
            &self.transactions_created,
            &self.idempotent_replays,
            &self.faults_latency,
            &self.faults_status,
            &self.faults_reset,
            &self.faults_stall,
        ]
    }

    pub(crate) fn snapshot(&self) -> Counters {
        let get = |cell: &AtomicU64| cell.load(Ordering::Relaxed);
        Counters {
            requests_total: get(&self.requests_total),
            connections: get(&self.connections),
            tls_handshake_failures: get(&self.tls_handshake_failures),
            plain_http_attempts: get(&self.plain_http_attempts),
            logins_ok: get(&self.logins_ok),
            logins_failed: get(&self.logins_failed),
            refreshes_ok: get(&self.refreshes_ok),
            refreshes_failed: get(&self.refreshes_failed),
            logouts: get(&self.logouts),
            transactions_created: get(&self.transactions_created),
            idempotent_replays: get(&self.idempotent_replays),
            side_effects: lock(&self.side_effects).clone(),
            faults_applied: FaultCounts {
                latency: get(&self.faults_latency),
                status: get(&self.faults_status),
                reset: get(&self.faults_reset),
                stall: get(&self.faults_stall),
            },
        }
    }

    fn clear(&self) {
        for cell in self.cells() {
            cell.store(0, Ordering::Relaxed);
        }
        lock(&self.side_effects).clear();
    }
}

/// What an idempotency key is bound to.
pub(crate) struct StoredResponse {
    pub(crate) request: serde_json::Value,
    pub(crate) status: u16,
    pub(crate) body: Bytes,
}

/// Transactions and the idempotency store.
#[derive(Default)]
pub(crate) struct Ledger {
    pub(crate) transactions: Vec<serde_json::Value>,
    pub(crate) by_key: HashMap<String, StoredResponse>,
}

/// The shared state behind both listeners.
pub(crate) struct App {
    pub(crate) users: HashMap<String, String>,
    pub(crate) login_key: LoginKey,
    pub(crate) tokens: Tokens,
    pub(crate) counters: CounterCells,
    pub(crate) requests: Mutex<VecDeque<LoggedRequest>>,
    pub(crate) faults: Mutex<FaultBook>,
    pub(crate) ledger: Mutex<Ledger>,
    /// Consecutive failed logins per email.
    pub(crate) failures: Mutex<HashMap<String, u32>>,
    /// Random base for `PCN` references, so two runs do not hand out the same ones.
    pub(crate) reference_base: u64,
    /// Seconds added to the clock the API's `Date` header shows (a fault knob: a FinCode
    /// whose clock, or ours, is off). Zero leaves hyper's own `Date` alone.
    pub(crate) clock_offset_secs: std::sync::atomic::AtomicI64,
}

// === impl App ===

impl App {
    pub(crate) fn new(users: HashMap<String, String>, login_key: LoginKey, tokens: Tokens) -> Self {
        Self {
            users,
            login_key,
            tokens,
            counters: CounterCells::default(),
            requests: Mutex::new(VecDeque::new()),
            faults: Mutex::new(FaultBook::default()),
            ledger: Mutex::new(Ledger::default()),
            failures: Mutex::new(HashMap::new()),
            reference_base: rand::random::<u64>() % 8_000_000_000 + 1_000_000_000,
            clock_offset_secs: std::sync::atomic::AtomicI64::new(0),
        }
    }

    pub(crate) fn log_request(&self, request: LoggedRequest) {
        let mut log = lock(&self.requests);
        if log.len() == REQUEST_LOG_CAPACITY {
            log.pop_front();
        }
        log.push_back(request);
    }

    pub(crate) fn seen_requests(&self) -> Vec<SeenRequest> {
        lock(&self.requests)
            .iter()
            .map(|r| SeenRequest {
                body_len: r.body_len.load(Ordering::Relaxed),
                ..r.head.clone()
            })
            .collect()
    }

    /// `POST /reset`: counters, request log, faults and lockouts. Transactions, the idempotency
    /// store and tokens survive, as they would at FinCode.
    pub(crate) fn reset(&self) {
        self.counters.clear();
        lock(&self.requests).clear();
        lock(&self.faults).clear();
        lock(&self.failures).clear();
    }
}
