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

    /// A request's turn without waiting: [`Look::Go`] (a token taken from each bucket
    /// that applies), or why it must wait. Almost every request goes at once, with no
    /// future to build for it.
    pub(super) fn look(&self, route: &'static str) -> Look {
        // FinCode asked for a pause on this route.
        if let Some(until) = self.throttle.paused_until(route) {
            return Look::Paused(until);
        }
        // The route's bucket first (it is the tighter one), then the global one. A token
        // taken from the route bucket while the global one is empty is spent: the route
        // then runs slightly under its rate, never over it.
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
        for (bucket, key) in buckets {
            if let Err(not_until) = bucket.check() {
                return Look::Full(not_until.wait_time_from(TokioClock.now()), key);
            }
        }
        Look::Go
    }

    /// Waits for the request's turn after `first` said it must wait, or says how long
    /// the app should wait instead.
    pub(super) async fn admit_after(
        &self,
        route: &'static str,
        mut look: Look,
    ) -> Result<(), SidecarError> {
        let started = Instant::now();
        let give_up = started + self.max_wait;
        let mut waited = None;
        loop {
            match look {
                Look::Go => break,
                Look::Paused(until) => {
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
                }
                Look::Full(wait, key) => {
                    if Instant::now() + wait > give_up {
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
            }
            look = self.look(route);
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

/// What [`Limits::look`] saw.
#[derive(Clone, Copy, Debug)]
pub(super) enum Look {
    /// The request goes now.
    Go,
    /// FinCode paused the route until then.
    Paused(Instant),
    /// A bucket (named by its setting) has a token again after this wait.
    Full(Duration, &'static str),
}

fn quota(rate: NonZeroU32, burst: u32) -> Quota {
    Quota::per_second(rate).allow_burst(NonZeroU32::new(burst).unwrap_or(rate))
}
