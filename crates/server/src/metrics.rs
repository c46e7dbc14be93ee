//! Connection metrics, one series per listener: open connections, and connections closed
//! at the cap (evicted while idle, or refused because every connection was busy).

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabel {
    listener: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectedLabel {
    listener: &'static str,
    reason: &'static str,
}

/// The connection families, shared by every listener. Cheap to clone. The `Default` one
/// is registered nowhere (for tests and programmatic set-ups).
#[derive(Clone, Debug, Default)]
pub struct ConnectionMetrics {
    open: Family<ListenerLabel, Gauge>,
    rejected: Family<RejectedLabel, Counter>,
    stalled: Family<ListenerLabel, Counter>,
    panics: Family<ListenerLabel, Counter>,
}

/// One listener's series.
#[derive(Clone, Debug)]
pub(crate) struct ListenerMetrics {
    open: Gauge,
    rejected: Family<RejectedLabel, Counter>,
    stalled: Counter,
    panics: Counter,
    listener: &'static str,
}

// === impl ConnectionMetrics ===

impl ConnectionMetrics {
    /// Registers the families on `registry`; once per process.
    pub fn register(registry: &mut Registry) -> Self {
        let this = Self::default();
        registry.register(
            "fincode_listener_connections",
            "Connections open on each listener",
            this.open.clone(),
        );
        registry.register(
            "fincode_listener_connections_rejected",
            "Connections closed at the listener's max_connections: evicted_idle (the oldest \
             idle one, to make room), evicted_unverified (with none idle, the oldest whose \
             requests are all from senders not yet verified) or full (the new one, every connection being busy)",
            this.rejected.clone(),
        );
        registry.register(
            "fincode_listener_stalled_connections",
            "Connections closed because a request in flight made no progress for the \
             listener's stall_timeout (e.g. a client that never reads its responses)",
            this.stalled.clone(),
        );
        registry.register(
            "fincode_listener_panics",
            "Requests whose handler panicked (a bug), answered 500",
            this.panics.clone(),
        );
        this
    }

    pub(crate) fn for_listener(&self, listener: &'static str) -> ListenerMetrics {
        for reason in ["evicted_idle", "evicted_unverified", "full"] {
            let _ = self
                .rejected
                .get_or_create(&RejectedLabel { listener, reason });
        }
        ListenerMetrics {
            open: self.open.get_or_create(&ListenerLabel { listener }).clone(),
            rejected: self.rejected.clone(),
            stalled: self
                .stalled
                .get_or_create(&ListenerLabel { listener })
                .clone(),
            panics: self
                .panics
                .get_or_create(&ListenerLabel { listener })
                .clone(),
            listener,
        }
    }

    /// Connections open on `listener` now (for tests).
    pub fn open(&self, listener: &'static str) -> i64 {
        self.open.get_or_create(&ListenerLabel { listener }).get()
    }

    /// Requests on `listener` whose handler panicked (for tests).
    pub fn panics(&self, listener: &'static str) -> u64 {
        self.panics.get_or_create(&ListenerLabel { listener }).get()
    }

    /// Connections `listener` closed as stalled (for tests).
    pub fn stalled(&self, listener: &'static str) -> u64 {
        self.stalled
            .get_or_create(&ListenerLabel { listener })
            .get()
    }

    /// Connections `listener` closed at its cap for `reason` (for tests).
    pub fn rejected(&self, listener: &'static str, reason: &'static str) -> u64 {
        self.rejected
            .get_or_create(&RejectedLabel { listener, reason })
            .get()
    }
}

// === impl ListenerMetrics ===

impl ListenerMetrics {
    pub(crate) fn opened(&self) {
        self.open.inc();
    }

    pub(crate) fn closed(&self) {
        self.open.dec();
    }

    pub(crate) fn listener(&self) -> &'static str {
        self.listener
    }

    pub(crate) fn panicked(&self) {
        self.panics.inc();
    }

    pub(crate) fn stalled(&self) {
        self.stalled.inc();
    }

    pub(crate) fn rejected(&self, reason: &'static str) {
        self.rejected
            .get_or_create(&RejectedLabel {
                listener: self.listener,
                reason,
            })
            .inc();
    }
}
