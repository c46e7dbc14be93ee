use fincode_server::hook::Hooked;
use tower::Layer;

use super::Correlation;

/// Adds [`Correlation`] to a stack.
#[derive(Clone, Copy, Debug)]
pub struct CorrelationLayer {
    pub(super) sample_ratio: f64,
}

// === impl CorrelationLayer ===

impl CorrelationLayer {
    /// New traces are sampled with probability `sample_ratio` (`traces.sample_ratio`).
    pub fn new(sample_ratio: f64) -> Self {
        Self { sample_ratio }
    }
}

impl<S> Layer<S> for CorrelationLayer {
    type Service = Correlation<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Hooked::new(inner, *self)
    }
}
