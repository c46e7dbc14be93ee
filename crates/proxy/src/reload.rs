//! Applying a reloaded config to a running proxy.
//!
//! Only the settings an operator tunes while traffic flows are reloadable here: the rate
//! limits, the retry policy, the breaker's thresholds and the in-flight cap. Everything
//! else the proxy was built from (the upstream and its TLS, credentials, listeners,
//! redaction, body limits) needs a restart; the caller finds those changes and says so.
//!
//! A reload is two steps so that it is all or nothing: [`ProxyReloader::prepare`] builds
//! every new setting and fails without touching anything, then [`PendingReload::apply`]
//! swaps them in. Each layer reads its settings once when a request reaches it, so a
//! request in flight finishes with the settings it started with.

use fincode_config::{BreakerConfig, Config};

use crate::{
    BuildError,
    breaker::Breaker,
    rate_limit::{PendingLimits, RateLimitLayer},
    retry::{PendingPolicy, RetryLayer},
    shed::LoadShedLayer,
};

/// Handles on the proxy's reloadable layers; cheap to clone, valid for the proxy's life.
#[derive(Clone, Debug)]
pub struct ProxyReloader {
    pub(crate) rate_limit: RateLimitLayer,
    pub(crate) retry: RetryLayer,
    pub(crate) breaker: Breaker,
    pub(crate) shed: LoadShedLayer,
}

/// Settings built from a new config, not yet in use.
#[derive(Debug)]
#[must_use = "nothing changes until the reload is applied"]
pub struct PendingReload {
    reloader: ProxyReloader,
    limits: PendingLimits,
    policy: PendingPolicy,
    breaker: BreakerConfig,
    max_in_flight: usize,
}

// === impl ProxyReloader ===

impl ProxyReloader {
    /// The config sections this reloader applies, as dotted keys (a section applies
    /// every key under it). Changes anywhere else need a restart.
    pub const KEYS: &'static [&'static str] = &[
        "rate_limit",
        "retry",
        "breaker",
        "limits.max_concurrent_requests",
    ];

    /// Builds the new settings from `config`, or says which key is wrong; the running
    /// proxy is untouched either way.
    pub fn prepare(&self, config: &Config) -> Result<PendingReload, BuildError> {
        Ok(PendingReload {
            limits: self.rate_limit.rebuild(&config.rate_limit)?,
            policy: self
                .retry
                .rebuild(&config.retry, config.rate_limit.upstream_backoff),
            breaker: config.breaker.clone(),
            max_in_flight: config.limits.max_concurrent_requests,
            reloader: self.clone(),
        })
    }
}

// === impl PendingReload ===

impl PendingReload {
    /// Puts the new settings in use for every request that reaches each layer from now on.
    pub fn apply(self) {
        let Self {
            reloader,
            limits,
            policy,
            breaker,
            max_in_flight,
        } = self;
        reloader.rate_limit.install(limits);
        reloader.retry.install(policy);
        reloader.breaker.reconfigure(&breaker);
        reloader.shed.set_max(max_in_flight);
    }
}
