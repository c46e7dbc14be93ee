//! Rate limiting: the sidecar paces the app's calls so FinCode never has to.
//!
//! Two sources of "slow down" are honoured in one place:
//! - local token buckets ([`governor`]'s GCRA): a global one and tighter ones per route
//!   template (create-transaction by default). A request over the rate waits its turn
//!   for up to `rate_limit.max_wait`, then gets 429 `rate_limited` with `Retry-After`;
//! - FinCode's own 429s: the retry layer reports each one to the shared [`Throttle`],
//!   and every request to that route then waits out FinCode's `Retry-After` (or
//!   `rate_limit.upstream_backoff`) here, instead of each request discovering the 429 on
//!   its own and adding to the pressure.

use std::{
    collections::HashMap,
    future::Future,
    num::NonZeroU32,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll},
    time::Duration,
};

use arc_swap::ArcSwap;
use fincode_config::RateLimitConfig;
use governor::{
    DefaultDirectRateLimiter, Quota,
    clock::{Clock, DefaultClock},
};
use http::{Request, Response};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::Registry,
};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

use crate::{
    BuildError, ErrorKind, SidecarError,
    routes::{self, OTHER, Route},
    upstream::humanize,
};

/// Per-route pauses ordered by FinCode's 429s, shared by the retry layer (which hears
/// them) and the rate limiter (which enforces them). Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Throttle {
    until: Arc<Mutex<HashMap<&'static str, Instant>>>,
}

// === impl Throttle ===

impl Throttle {
    /// FinCode answered 429 on `route`: hold that route's requests for `pause`. A later
    /// pause never shortens an earlier, longer one.
    pub fn pause(&self, route: &'static str, pause: Duration) {
        let until = Instant::now() + pause;
        let mut map = self.until.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = map.entry(route).or_insert(until);
        *entry = (*entry).max(until);
    }

    /// When `route` may be called again, if FinCode asked for a pause that has not ended.
    fn paused_until(&self, route: &'static str) -> Option<Instant> {
        let now = Instant::now();
        let mut map = self.until.lock().unwrap_or_else(PoisonError::into_inner);
        match map.get(route) {
            Some(until) if *until > now => Some(*until),
            Some(_) => {
                map.remove(route);
                None
            }
            None => None,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CauseLabel {
    /// `local` (our bucket) or `upstream` (FinCode's 429).
    cause: &'static str,
}

/// Rate-limit metrics: how often and how long requests waited, and how many were refused.
#[derive(Clone, Debug)]
struct Metrics {
    waited: Family<CauseLabel, Counter>,
    wait_seconds: Histogram,
    rejected: Family<CauseLabel, Counter>,
}

impl Metrics {
    fn register(registry: &mut Registry) -> Self {
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

/// The limits, built once from `[rate_limit]`.
#[derive(Debug)]
struct Limits {
    global: Option<DefaultDirectRateLimiter>,
    routes: HashMap<&'static str, DefaultDirectRateLimiter>,
    max_wait: Duration,
    throttle: Throttle,
    metrics: Metrics,
}

/// Adds [`RateLimit`] to a stack.
///
/// The limits sit behind an [`ArcSwap`] so a config reload can replace them whole
/// ([`Self::rebuild`], then [`Self::install`]); each request reads them once when it
/// reaches the layer.
#[derive(Clone, Debug)]
pub struct RateLimitLayer {
    limits: Arc<ArcSwap<Limits>>,
}

/// Paces requests by the local buckets and FinCode's 429s.
#[derive(Clone, Debug)]
pub struct RateLimit<S> {
    inner: S,
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

fn quota(rate: NonZeroU32, burst: u32) -> Quota {
    Quota::per_second(rate).allow_burst(NonZeroU32::new(burst).unwrap_or(rate))
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

// === impl Limits ===

impl Limits {
    /// The buckets for `config`. A route that is not a known template is refused: it
    /// would never match.
    fn build(
        config: &RateLimitConfig,
        throttle: Throttle,
        metrics: Metrics,
    ) -> Result<Self, BuildError> {
        let global = NonZeroU32::new(config.per_second)
            .map(|rate| DefaultDirectRateLimiter::direct(quota(rate, config.burst)));
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
                DefaultDirectRateLimiter::direct(quota(rate, limit.burst)),
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
    async fn admit(&self, route: &'static str) -> Result<(), SidecarError> {
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
                    wait = Some((not_until.wait_time_from(DefaultClock::default().now()), key));
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

// === impl RateLimit ===

impl<S, B, RB> Service<Request<B>> for RateLimit<S>
where
    S: Service<Request<B>, Response = Response<RB>, Error = SidecarError> + Clone + Send + 'static,
    S::Future: Send,
    B: Send + 'static,
{
    type Response = Response<RB>;
    type Error = SidecarError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<RB>, SidecarError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let limits = self.limits.load_full();
        let route = req.extensions().get::<Route>().map_or(OTHER, |r| r.0);
        Box::pin(async move {
            limits.admit(route).await?;
            inner.oneshot(req).await
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use fincode_config::RouteLimit;
    use http::StatusCode;
    use tower::service_fn;

    use super::*;

    const CREATE: &str = "/transactionmanagement/create-transaction";

    fn config(per_second: u32, burst: u32, max_wait: Duration) -> RateLimitConfig {
        RateLimitConfig {
            per_second,
            burst,
            max_wait,
            upstream_backoff: Duration::from_secs(1),
            routes: BTreeMap::new(),
        }
    }

    #[allow(clippy::needless_pass_by_value)] // Owned: the returned service must not borrow it.
    fn service(
        config: RateLimitConfig,
        throttle: Throttle,
    ) -> impl Service<Request<()>, Response = Response<()>, Error = SidecarError, Future = impl Send>
    + Clone {
        let layer = RateLimitLayer::new(&config, throttle, &mut Registry::default()).unwrap();
        layer.layer(service_fn(|_req: Request<()>| async {
            Ok::<_, SidecarError>(Response::new(()))
        }))
    }

    fn request(route: &'static str) -> Request<()> {
        let mut req = Request::new(());
        req.extensions_mut().insert(Route(route));
        req
    }

    #[tokio::test]
    async fn a_burst_passes_then_the_next_is_refused_with_retry_after() {
        let svc = service(config(1, 3, Duration::ZERO), Throttle::default());
        for _ in 0..3 {
            svc.clone().oneshot(request(OTHER)).await.unwrap();
        }
        let err = svc.clone().oneshot(request(OTHER)).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::RateLimited);
        assert_eq!(err.kind().status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(
            err.detail().contains("rate_limit.per_second"),
            "{}",
            err.detail()
        );
        let response = err.to_response::<http_body_util::Full<bytes::Bytes>>("id");
        let after: u64 = response.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=2).contains(&after), "{after}");
    }

    #[tokio::test]
    async fn a_request_within_max_wait_waits_for_its_turn() {
        // 50/s: the token after the burst comes 20ms later, within max_wait.
        let svc = service(
            config(50, 1, Duration::from_millis(500)),
            Throttle::default(),
        );
        for _ in 0..3 {
            svc.clone().oneshot(request(OTHER)).await.unwrap();
        }
    }

    #[tokio::test]
    async fn route_limits_are_separate_and_tighter() {
        let mut config = config(1000, 1000, Duration::ZERO);
        config.routes.insert(
            CREATE.to_owned(),
            RouteLimit {
                per_second: 1,
                burst: 1,
            },
        );
        let svc = service(config, Throttle::default());
        svc.clone().oneshot(request(CREATE)).await.unwrap();
        let err = svc.clone().oneshot(request(CREATE)).await.unwrap_err();
        assert!(
            err.detail().contains("rate_limit.routes"),
            "{}",
            err.detail()
        );
        // Other routes still flow.
        for _ in 0..10 {
            svc.clone().oneshot(request(OTHER)).await.unwrap();
        }
    }

    #[tokio::test]
    async fn zero_per_second_is_no_global_limit() {
        let svc = service(config(0, 1, Duration::ZERO), Throttle::default());
        for _ in 0..100 {
            svc.clone().oneshot(request(OTHER)).await.unwrap();
        }
    }

    #[test]
    fn unknown_routes_are_refused_at_build() {
        let mut config = config(1, 1, Duration::ZERO);
        config.routes.insert(
            "/transactionmanagement/create-transactoin".to_owned(),
            RouteLimit {
                per_second: 1,
                burst: 1,
            },
        );
        let err = RateLimitLayer::new(&config, Throttle::default(), &mut Registry::default())
            .unwrap_err();
        assert!(err.to_string().contains("create-transactoin"), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn fincode_429_pauses_the_route_within_max_wait_and_refuses_beyond() {
        let throttle = Throttle::default();
        let svc = service(config(0, 1, Duration::from_secs(2)), throttle.clone());
        throttle.pause(CREATE, Duration::from_secs(1));
        let started = Instant::now();
        svc.clone().oneshot(request(CREATE)).await.unwrap();
        assert!(started.elapsed() >= Duration::from_secs(1));
        // Other routes were never held.
        let started = Instant::now();
        svc.clone().oneshot(request(OTHER)).await.unwrap();
        assert_eq!(started.elapsed(), Duration::ZERO);

        throttle.pause(CREATE, Duration::from_secs(30));
        // A shorter pause does not cut a longer one short.
        throttle.pause(CREATE, Duration::from_secs(1));
        let err = svc.clone().oneshot(request(CREATE)).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::RateLimited);
        assert!(
            err.detail().contains("FinCode answered 429"),
            "{}",
            err.detail()
        );
        let response = err.to_response::<http_body_util::Full<bytes::Bytes>>("id");
        assert_eq!(response.headers()["retry-after"], "30");
    }
}
