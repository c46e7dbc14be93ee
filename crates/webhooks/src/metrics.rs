//! Webhook metrics: receipt, rejection by reason, duplicates, delivery outcomes, queue
//! depth, and how long acknowledging and delivering take. Every label value is a static
//! string from a bounded set.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

/// Why the listener refused a request (the `reason` label).
pub(crate) const REJECT_REASONS: [&str; 13] = [
    "not_found",
    "method",
    "too_large",
    "ip_not_allowed",
    "missing_signature",
    "malformed_signature",
    "bad_signature",
    "missing_timestamp",
    "stale_timestamp",
    "bad_json",
    "store_unavailable",
    "body_read",
    "unverified_budget",
];

/// The webhook families. Cheap to clone.
#[derive(Clone, Debug)]
pub struct WebhookMetrics {
    received: Counter,
    rejected: Family<ReasonLabel, Counter>,
    duplicates: Counter,
    deliveries: Family<ResultLabel, Counter>,
    queue_depth: Gauge,
    store_healthy: Gauge,
    ack_seconds: Histogram,
    delivery_seconds: Histogram,
}

// === impl WebhookMetrics ===

impl WebhookMetrics {
    /// Registers the families on `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let this = Self {
            received: Counter::default(),
            rejected: Family::default(),
            duplicates: Counter::default(),
            deliveries: Family::default(),
            queue_depth: Gauge::default(),
            store_healthy: Gauge::default(),
            ack_seconds: Histogram::new([
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
            ]),
            delivery_seconds: Histogram::new([
                0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0,
            ]),
        };
        registry.register(
            "fincode_webhooks_received",
            "Webhooks verified and committed (duplicates included)",
            this.received.clone(),
        );
        registry.register(
            "fincode_webhooks_rejected",
            "Webhook requests refused, by reason",
            this.rejected.clone(),
        );
        registry.register(
            "fincode_webhooks_duplicates",
            "Webhooks acknowledged as duplicates of a stored event (never delivered twice)",
            this.duplicates.clone(),
        );
        registry.register(
            "fincode_webhook_deliveries",
            "Delivery attempts to the app: delivered, failed (to be retried), superseded \
             (FinCode reports a later status; retried in 30 minutes), dead",
            this.deliveries.clone(),
        );
        registry.register(
            "fincode_webhook_queue_depth",
            "Events waiting for delivery",
            this.queue_depth.clone(),
        );
        registry.register(
            "fincode_webhook_store_healthy",
            "1 while the webhook store works, 0 when it cannot (a stopped writer, a database \
             failing every call): webhooks are then answered 503 and /readyz fails",
            this.store_healthy.clone(),
        );
        registry.register(
            "fincode_webhook_ack_duration_seconds",
            "From the end of the request body to the 200, durable commit included",
            this.ack_seconds.clone(),
        );
        registry.register(
            "fincode_webhook_delivery_duration_seconds",
            "From receipt to the app's acknowledgement",
            this.delivery_seconds.clone(),
        );
        for reason in REJECT_REASONS {
            let _ = this.rejected.get_or_create(&ReasonLabel { reason });
        }
        for result in ["delivered", "failed", "superseded", "dead"] {
            let _ = this.deliveries.get_or_create(&ResultLabel { result });
        }
        this
    }

    pub(crate) fn received(&self) {
        self.received.inc();
    }

    pub(crate) fn rejected(&self, reason: &'static str) {
        self.rejected.get_or_create(&ReasonLabel { reason }).inc();
    }

    pub(crate) fn duplicate(&self) {
        self.duplicates.inc();
    }

    pub(crate) fn delivery(&self, result: &'static str) {
        self.deliveries.get_or_create(&ResultLabel { result }).inc();
    }

    pub(crate) fn set_queue_depth(&self, pending: u64) {
        self.queue_depth
            .set(i64::try_from(pending).unwrap_or(i64::MAX));
    }

    pub(crate) fn set_store_healthy(&self, healthy: bool) {
        self.store_healthy.set(i64::from(healthy));
    }

    pub(crate) fn ack(&self, seconds: f64) {
        self.ack_seconds.observe(seconds);
    }

    pub(crate) fn delivered_after(&self, seconds: f64) {
        self.delivery_seconds.observe(seconds);
    }
}
