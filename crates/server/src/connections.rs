//! The open connections of one listener: the cap, eviction of idle connections at the
//! cap, and each connection's activity (requests in flight, for the idle timeout).

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::metrics::ListenerMetrics;

/// Connections being closed (evicted, not yet gone) may take the count over the cap by at
/// most this factor; past it new connections are refused, so a burst of accepts cannot
/// outrun the tasks that close evicted ones.
const EVICTING_HEADROOM: usize = 2;

/// The open connections of one listener.
pub(crate) struct Connections {
    max: usize,
    open: Arc<Mutex<Registry>>,
    metrics: ListenerMetrics,
}

#[derive(Default)]
struct Registry {
    next_id: u64,
    /// By age: ids only grow, so the first entries are the oldest connections.
    open: BTreeMap<u64, Entry>,
}

struct Entry {
    activity: Arc<Activity>,
    close: CancellationToken,
}

/// One admitted connection; dropping it gives the place back.
pub(crate) struct Slot {
    id: u64,
    /// Admitted by evicting another connection.
    at_cap: bool,
    activity: Arc<Activity>,
    close: CancellationToken,
    open: Arc<Mutex<Registry>>,
    metrics: ListenerMetrics,
}

/// Requests in flight on one connection, and when the last one ended. Kept to a few
/// atomic operations per request: the idle timer reads them when it wakes, rather than
/// being woken on every change (that would cost two task wake-ups per request).
#[derive(Debug)]
pub(crate) struct Activity {
    in_flight: AtomicUsize,
    /// Of those, requests marked evictable (see [`crate::Evictable`]).
    evictable: AtomicUsize,
    /// Whether any request has started on this connection.
    used: AtomicBool,
    /// When the last request ended, in nanoseconds since `opened`.
    last_end: AtomicU64,
    /// When a request in flight last made progress, in nanoseconds since `opened`.
    last_progress: AtomicU64,
    opened: Instant,
}

// === impl Connections ===

impl Connections {
    pub(crate) fn new(max: usize, metrics: ListenerMetrics) -> Self {
        Self {
            max: max.max(1),
            open: Arc::default(),
            metrics,
        }
    }

    /// A slot for a new connection, or `None` when the cap is reached and every connection
    /// has a request in flight. At the cap, the oldest idle connection is closed to make
    /// room. `force` closes every slot at once (the drain deadline).
    pub(crate) fn admit(&self, force: &CancellationToken) -> Option<Slot> {
        let mut registry = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let open = registry.open.len();
        let at_cap = open >= self.max;
        if at_cap {
            // An idle connection first (it owes nobody an answer), else one whose every
            // request in flight is from a sender not yet trusted (an unverified webhook).
            let victim = (open < self.max * EVICTING_HEADROOM)
                .then(|| {
                    let live = || registry.open.values().filter(|e| !e.close.is_cancelled());
                    live()
                        .find(|entry| entry.activity.is_idle())
                        .map(|entry| (entry, "evicted_idle"))
                        .or_else(|| {
                            live()
                                .find(|entry| entry.activity.is_evictable())
                                .map(|entry| (entry, "evicted_unverified"))
                        })
                })
                .flatten();
            let Some((entry, reason)) = victim else {
                self.metrics.rejected("full");
                return None;
            };
            entry.close.cancel();
            self.metrics.rejected(reason);
        }
        let id = registry.next_id;
        registry.next_id += 1;
        let activity = Arc::new(Activity::new());
        let close = force.child_token();
        registry.open.insert(
            id,
            Entry {
                activity: activity.clone(),
                close: close.clone(),
            },
        );
        self.metrics.opened();
        Some(Slot {
            id,
            activity,
            close,
            at_cap,
            open: self.open.clone(),
            metrics: self.metrics.clone(),
        })
    }
}

// === impl Slot ===

impl Slot {
    /// Whether another connection was evicted to admit this one.
    pub(crate) fn at_cap(&self) -> bool {
        self.at_cap
    }

    pub(crate) fn activity(&self) -> Arc<Activity> {
        self.activity.clone()
    }

    /// Counts this connection as closed for stalling.
    pub(crate) fn stalled(&self) {
        self.metrics.stalled();
    }

    /// Resolves when this connection must close now (evicted, or the drain deadline).
    pub(crate) async fn closed(&self) {
        self.close.cancelled().await;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .open
            .remove(&self.id);
        self.metrics.closed();
    }
}

// === impl Activity ===

impl Activity {
    pub(crate) fn new() -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            evictable: AtomicUsize::new(0),
            used: AtomicBool::new(false),
            last_end: AtomicU64::new(0),
            last_progress: AtomicU64::new(0),
            opened: Instant::now(),
        }
    }

    pub(crate) fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
    }

    /// Whether the connection may be closed at the cap: every request in flight on it is
    /// marked evictable (or none is in flight).
    pub(crate) fn is_evictable(&self) -> bool {
        // `evictable` first: a mark is taken after its request started and given back
        // before it ends, so this order never sees more marks than requests.
        let evictable = self.evictable.load(Ordering::Acquire);
        self.in_flight.load(Ordering::Acquire) <= evictable
    }

    pub(crate) fn mark_evictable(&self) {
        self.evictable.fetch_add(1, Ordering::AcqRel);
    }

    pub(crate) fn unmark_evictable(&self) {
        self.evictable.fetch_sub(1, Ordering::AcqRel);
    }

    pub(crate) fn request_started(&self) {
        self.used.store(true, Ordering::Release);
        self.progress();
        self.in_flight.fetch_add(1, Ordering::AcqRel);
    }

    pub(crate) fn request_ended(&self) {
        self.last_end.fetch_max(self.since_open(), Ordering::AcqRel);
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }

    /// Marks progress on a request in flight: it started, its response head is ready, or a
    /// chunk of its response body was taken to be sent.
    pub(crate) fn progress(&self) {
        self.last_progress
            .fetch_max(self.since_open(), Ordering::AcqRel);
    }

    fn since_open(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Resolves once a request has been in flight with no progress for `stall`; never when
    /// `stall` is zero (off). Idle connections are the idle timeout's business, not this.
    ///
    /// A response body is polled only when the peer has granted room to send it (HTTP/2
    /// flow control, or a full TCP send buffer on HTTP/1), so a client that never reads
    /// makes no progress and is caught here, while still answering PINGs.
    pub(crate) async fn stalled_for(&self, stall: Duration) {
        if stall.is_zero() {
            return std::future::pending().await;
        }
        let mut wake = self.opened + stall;
        loop {
            tokio::time::sleep_until(wake).await;
            if self.is_idle() {
                wake = Instant::now() + stall;
                continue;
            }
            let last = Duration::from_nanos(self.last_progress.load(Ordering::Acquire));
            let deadline = self.opened + last + stall;
            if Instant::now() >= deadline {
                return;
            }
            wake = deadline;
        }
    }

    /// Resolves once the connection has had no request in flight for `first` since it
    /// was opened (no request started at all) or for `between` since the last one ended.
    pub(crate) async fn idle_for(&self, first: Duration, between: Duration) {
        let mut wake = self.opened + first.min(between);
        loop {
            tokio::time::sleep_until(wake).await;
            if !self.is_idle() {
                wake = Instant::now() + between;
                continue;
            }
            let deadline = if self.used.load(Ordering::Acquire) {
                let last_end = Duration::from_nanos(self.last_end.load(Ordering::Acquire));
                self.opened + last_end + between
            } else {
                self.opened + first
            };
            if Instant::now() >= deadline {
                return;
            }
            wake = deadline;
        }
    }
}
