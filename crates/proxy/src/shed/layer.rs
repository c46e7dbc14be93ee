//! [`LoadShedLayer`]: puts a [`LoadShed`](super::LoadShed) in front of a service; changes the cap on reload.

use std::sync::Arc;

use arc_swap::ArcSwap;
use prometheus_client::{metrics::counter::Counter, registry::Registry};
use tokio::sync::Semaphore;

use crate::admit::AdmitLayer;

/// Adds [`LoadShed`](super::LoadShed) to a stack.
///
/// The cap sits behind an [`ArcSwap`] so a config reload can change it
/// ([`LoadShedLayer::set_max`]): requests admitted before hold permits of the old cap and release
/// them there, so for as long as they run the two caps add up.
pub type LoadShedLayer = AdmitLayer<Shedder>;

/// The in-flight cap and the count of requests refused at it.
#[derive(Clone, Debug)]
pub struct Shedder {
    pub(super) cap: Arc<ArcSwap<Cap>>,
    pub(super) shed: Counter,
}

/// One in-flight cap: its permits and the number they started at (for the error).
#[derive(Debug)]
pub(super) struct Cap {
    pub(super) permits: Arc<Semaphore>,
    pub(super) max: usize,
}

// === impl Cap ===

impl Cap {
    fn new(max: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max.min(Semaphore::MAX_PERMITS))),
            max,
        }
    }
}

// === impl LoadShedLayer ===

impl LoadShedLayer {
    /// At most `max` requests in flight (`limits.max_concurrent_requests`).
    pub fn new(max: usize, registry: &mut Registry) -> Self {
        let shed = Counter::default();
        registry.register(
            "fincode_shed",
            "Requests refused with 503 overloaded because too many were in flight",
            shed.clone(),
        );
        Self {
            admission: Shedder {
                cap: Arc::new(ArcSwap::from_pointee(Cap::new(max))),
                shed,
            },
        }
    }

    /// Applies a reloaded `limits.max_concurrent_requests` to requests that arrive from
    /// now on; an unchanged value keeps the current permits.
    pub fn set_max(&self, max: usize) {
        let cap = &self.admission.cap;
        if cap.load().max != max {
            cap.store(Arc::new(Cap::new(max)));
        }
    }
}
