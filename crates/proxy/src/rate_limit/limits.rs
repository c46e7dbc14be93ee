//! [`Limits`]: the token buckets built from `[rate_limit]`, and the wait for a turn.

use std::{collections::HashMap, num::NonZeroU32, time::Duration};

use fincode_config::RateLimitConfig;
use governor::{Quota, clock::Clock};
use tokio::time::Instant;

use super::{
    Throttle,
    clock::{Bucket, TokioClock},
    metrics::{CauseLabel, Metrics},
};
use crate::{BuildError, ErrorKind, SidecarError, routes, upstream::humanize};

/// The limits, built once from `[rate_limit]`.
#[derive(Debug)]
pub(super) struct Limits {
    global: Option<Bucket>,
    routes: HashMap<&'static str, Bucket>,
    max_wait: Duration,
    pub(super) throttle: Throttle,
    pub(super) metrics: Metrics,
}

// === impl Limits ===

impl Limits {
    /// The buckets for `config`. A route that is not a known template is refused: it
    /// would never match.
    pub(super) fn build(
        config: &RateLimitConfig,
        throttle: Throttle,
        metrics: Metrics,
    ) -> Result<Self, BuildError> {
        let global = NonZeroU32::new(config.per_second)
            .map(|rate| Bucket::direct_with_clock(quota(rate, config.burst), TokioClock));
        let mut routes = HashMap::new();
        for (route, limit) in &config.routes {
            let Some(template) = routes::known(route) else {
                return Err(BuildError::RateLimitRoute(route.clone()));
            };
            let Some(rate) = NonZeroU32::new(limit.per_second) else {
                continue;
            };
            routes.insert(
                template,
                Bucket::direct_with_clock(quota(rate, limit.burst), TokioClock),
            );
        }
        Ok(Self {
            global,
            routes,
            max_wait: config.max_wait,
            throttle,
            metrics,
        })
    }

    /// Waits for the request's turn, or says how long the app should wait instead.
    pub(super) async fn admit(&self, route: &'static str) -> Result<(), SidecarError> {
        let started = Instant::now();
        let give_up = started + self.max_wait;
        let mut waited = None;
        loop {
            // FinCode asked for a pause on this route.
            if let Some(until) = self.throttle.paused_until(route) {
                if until > give_up {
                    self.metrics
                        .rejected
                        .get_or_create(&CauseLabel { cause: "upstream" })
                        .inc();
                    let after = until - Instant::now();
                    return Err(SidecarError::new(
                        ErrorKind::RateLimited,
                        format!(
                            "FinCode answered 429 on this route and asked for a pause; try again in {}",
                            humanize(after)
                        ),
                    )
                    .with_retry_after(after));
                }
                waited.get_or_insert("upstream");
                tokio::time::sleep_until(until).await;
                continue;
            }
            // The route's bucket first (it is the tighter one), then the global one. A
            // token taken from the route bucket while the global one is empty is spent:
            // the route then runs slightly under its rate, never over it.
            let buckets = self
                .routes
                .get(route)
                .into_iter()
                .map(|bucket| (bucket, "rate_limit.routes"))
                .chain(
                    self.global
                        .iter()
                        .map(|bucket| (bucket, "rate_limit.per_second")),
                );
            let mut wait = None;
            for (bucket, key) in buckets {
                if let Err(not_until) = bucket.check() {
                    wait = Some((not_until.wait_time_from(TokioClock.now()), key));
                    break;
                }
            }
            let Some((wait, key)) = wait else {
                break;
            };
            let now = Instant::now();
            if now + wait > give_up {
                self.metrics
                    .rejected
                    .get_or_create(&CauseLabel { cause: "local" })
                    .inc();
                return Err(SidecarError::new(
                    ErrorKind::RateLimited,
                    format!(
                        "over the sidecar's rate limit ({key}); try again in {}, or raise the limit",
                        humanize(wait)
                    ),
                )
                .with_retry_after(wait));
            }
            waited.get_or_insert("local");
            tokio::time::sleep(wait).await;
        }
        if let Some(cause) = waited {
            self.metrics
                .waited
                .get_or_create(&CauseLabel { cause })
                .inc();
            self.metrics
                .wait_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        Ok(())
    }
}

fn quota(rate: NonZeroU32, burst: u32) -> Quota {
    Quota::per_second(rate).allow_burst(NonZeroU32::new(burst).unwrap_or(rate))
}
