//! [`RateLimitLayer`]: puts a [`RateLimit`] in front of a service; swaps the limits on reload.

use std::sync::Arc;

use arc_swap::ArcSwap;
use fincode_config::RateLimitConfig;
use prometheus_client::registry::Registry;
use tower::Layer;

use super::{RateLimit, Throttle, limits::Limits, metrics::Metrics};
use crate::BuildError;

/// Adds [`RateLimit`] to a stack.
///
/// The limits sit behind an [`ArcSwap`] so a config reload can replace them whole
/// ([`Self::rebuild`], then [`Self::install`]); each request reads them once when it
/// reaches the layer.
#[derive(Clone, Debug)]
pub struct RateLimitLayer {
    limits: Arc<ArcSwap<Limits>>,
}

/// Limits built from a new `[rate_limit]` and not yet in use: see
/// [`RateLimitLayer::rebuild`].
#[derive(Debug)]
pub struct PendingLimits(Arc<Limits>);

// === impl RateLimitLayer ===

impl RateLimitLayer {
    /// Builds the buckets from `config`; `throttle` is shared with the retry layer.
    /// A route that is not a known template is refused: it would never match.
    pub fn new(
        config: &RateLimitConfig,
        throttle: Throttle,
        registry: &mut Registry,
    ) -> Result<Self, BuildError> {
        let limits = Limits::build(config, throttle, Metrics::register(registry))?;
        Ok(Self {
            limits: Arc::new(ArcSwap::from_pointee(limits)),
        })
    }

    /// Builds the limits a reloaded `config` asks for, keeping FinCode's pauses and the
    /// metrics; nothing changes until [`Self::install`]. The buckets start full: a reload
    /// may let one burst through early, never more.
    pub fn rebuild(&self, config: &RateLimitConfig) -> Result<PendingLimits, BuildError> {
        let current = self.limits.load();
        let limits = Limits::build(config, current.throttle.clone(), current.metrics.clone())?;
        Ok(PendingLimits(Arc::new(limits)))
    }

    /// Puts rebuilt limits in use for every request that reaches the layer from now on.
    pub fn install(&self, pending: PendingLimits) {
        self.limits.store(pending.0);
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit {
            inner,
            limits: self.limits.clone(),
        }
    }
}
