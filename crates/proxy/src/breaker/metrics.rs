//! The breaker's Prometheus series.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use super::State;

/// The metric handles, resolved once so that a transition is an atomic store and add.
#[derive(Debug)]
pub(super) struct BreakerMetrics {
    pub(super) state: Gauge,
    pub(super) to_open: Counter,
    pub(super) to_half_open: Counter,
    pub(super) to_closed: Counter,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    upstream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransitionLabels {
    upstream: String,
    to: &'static str,
}

// === impl BreakerMetrics ===

impl BreakerMetrics {
    pub(super) fn register(registry: &mut Registry, upstream: &str) -> Self {
        let state = Family::<UpstreamLabels, Gauge>::default();
        let transitions = Family::<TransitionLabels, Counter>::default();
        registry.register(
            "fincode_circuit_breaker_state",
            "Circuit breaker state for the upstream: 0 closed, 1 half-open, 2 open",
            state.clone(),
        );
        // prometheus-client appends `_total` to counters.
        registry.register(
            "fincode_circuit_breaker_transitions",
            "Circuit breaker state changes, by the state entered",
            transitions.clone(),
        );
        // Every series exists from the start (the gauge at closed, the counters at 0), so
        // `increase()` in an alert sees the first opening.
        let transition = |to| {
            transitions.get_or_create_owned(&TransitionLabels {
                upstream: upstream.to_owned(),
                to,
            })
        };
        let this = Self {
            state: state.get_or_create_owned(&UpstreamLabels {
                upstream: upstream.to_owned(),
            }),
            to_open: transition("open"),
            to_half_open: transition("half_open"),
            to_closed: transition("closed"),
        };
        this.state.set(State::Closed.gauge_value());
        this
    }
}
