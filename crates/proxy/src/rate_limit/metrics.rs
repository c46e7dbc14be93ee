//! The rate limiter's Prometheus series.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct CauseLabel {
    /// `local` (our bucket) or `upstream` (FinCode's 429).
    pub(super) cause: &'static str,
}

/// Rate-limit metrics: how often and how long requests waited, and how many were refused.
#[derive(Clone, Debug)]
pub(super) struct Metrics {
    pub(super) waited: Family<CauseLabel, Counter>,
    pub(super) wait_seconds: Histogram,
    pub(super) rejected: Family<CauseLabel, Counter>,
}

impl Metrics {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let this = Self {
            waited: Family::default(),
            wait_seconds: Histogram::new([
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            rejected: Family::default(),
        };
        registry.register(
            "fincode_rate_limit_waits",
            "Requests that waited for their turn, by cause (local bucket or FinCode's 429)",
            this.waited.clone(),
        );
        registry.register(
            "fincode_rate_limit_wait_seconds",
            "How long requests waited for their turn",
            this.wait_seconds.clone(),
        );
        registry.register(
            "fincode_rate_limited",
            "Requests refused with 429 rate_limited, by cause",
            this.rejected.clone(),
        );
        for cause in ["local", "upstream"] {
            let _ = this.waited.get_or_create(&CauseLabel { cause });
            let _ = this.rejected.get_or_create(&CauseLabel { cause });
        }
        this
    }
}
