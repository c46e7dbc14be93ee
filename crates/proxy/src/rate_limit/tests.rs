use std::{collections::BTreeMap, time::Duration};

use fincode_config::{RateLimitConfig, RouteLimit};
use http::{Request, Response, StatusCode};
use prometheus_client::registry::Registry;
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt, service_fn};

use super::{RateLimitLayer, Throttle};
use crate::{
    ErrorKind, SidecarError,
    observe::{Counted, Tries},
    routes::OTHER,
};

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
) -> impl Service<Request<()>, Response = Response<()>, Error = SidecarError, Future = impl Send> + Clone
{
    let layer = RateLimitLayer::new(&config, throttle, &mut Registry::default()).unwrap();
    layer.layer(service_fn(|_req: Request<()>| async {
        Ok::<_, SidecarError>(Response::new(()))
    }))
}

fn request(route: &'static str) -> Request<()> {
    let mut req = Request::new(());
    req.extensions_mut().insert(Counted {
        route,
        tries: Tries::default(),
    });
    req
}

#[tokio::test(start_paused = true)]
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
    // tokio's clock stands still here: exactly one token's worth (1s) is missing.
    assert_eq!(after, 1);
    // A second later (on tokio's clock, which the buckets read) the next token is there.
    tokio::time::advance(Duration::from_secs(1)).await;
    svc.clone().oneshot(request(OTHER)).await.unwrap();
    svc.clone().oneshot(request(OTHER)).await.unwrap_err();
}

#[tokio::test(start_paused = true)]
async fn a_request_within_max_wait_waits_for_its_turn() {
    // 50/s: the token after the burst comes 20ms later, within max_wait.
    let svc = service(
        config(50, 1, Duration::from_millis(500)),
        Throttle::default(),
    );
    let started = Instant::now();
    for _ in 0..3 {
        svc.clone().oneshot(request(OTHER)).await.unwrap();
    }
    // Two waits of 20ms each, on tokio's clock (which auto-advances while paused).
    assert_eq!(started.elapsed(), Duration::from_millis(40));
}

#[tokio::test(start_paused = true)]
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

#[tokio::test(start_paused = true)]
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
    let err =
        RateLimitLayer::new(&config, Throttle::default(), &mut Registry::default()).unwrap_err();
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

/// A pause that ended clears the throttle's "any pause" flag, and a pause set after that
/// is seen again: the flag never hides a pause.
#[tokio::test(start_paused = true)]
async fn a_pause_after_the_last_one_ended_holds_again() {
    let throttle = Throttle::default();
    let svc = service(config(0, 1, Duration::from_secs(5)), throttle.clone());
    for round in 0..2 {
        throttle.pause(CREATE, Duration::from_secs(1));
        let started = Instant::now();
        svc.clone().oneshot(request(CREATE)).await.unwrap();
        assert!(
            started.elapsed() >= Duration::from_secs(1),
            "round {round}: held"
        );
        // The pause ended: the next request goes at once (and the flag is cleared).
        let started = Instant::now();
        svc.clone().oneshot(request(CREATE)).await.unwrap();
        assert_eq!(started.elapsed(), Duration::ZERO, "round {round}: free");
    }
}
