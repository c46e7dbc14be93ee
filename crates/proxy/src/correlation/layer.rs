use tower::Layer;

use super::Correlation;

/// Adds [`Correlation`] to a stack.
#[derive(Clone, Copy, Debug, Default)]
pub struct CorrelationLayer(());

// === impl CorrelationLayer ===

impl CorrelationLayer {
    /// The layer; it has no configuration.
    pub fn new() -> Self {
        Self(())
    }
}

impl<S> Layer<S> for CorrelationLayer {
    type Service = Correlation<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Correlation { inner }
    }
}
