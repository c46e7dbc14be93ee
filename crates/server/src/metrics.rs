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
}

/// One listener's series.
#[derive(Clone, Debug)]
pub(crate) struct ListenerMetrics {
    open: Gauge,
    rejected: Family<RejectedLabel, Counter>,
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
             idle one, to make room) or full (the new one, every connection being busy)",
            this.rejected.clone(),
        );
        this
    }

    pub(crate) fn for_listener(&self, listener: &'static str) -> ListenerMetrics {
        for reason in ["evicted_idle", "full"] {
            let _ = self
                .rejected
                .get_or_create(&RejectedLabel { listener, reason });
        }
        ListenerMetrics {
            open: self.open.get_or_create(&ListenerLabel { listener }).clone(),
            rejected: self.rejected.clone(),
            listener,
        }
    }

    /// Connections open on `listener` now (for tests).
    pub fn open(&self, listener: &'static str) -> i64 {
        self.open.get_or_create(&ListenerLabel { listener }).get()
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

    pub(crate) fn rejected(&self, reason: &'static str) {
        self.rejected
            .get_or_create(&RejectedLabel {
                listener: self.listener,
                reason,
            })
            .inc();
    }
}
