//! The retry layer over a scripted inner service, in paused time.

use std::{
    collections::VecDeque,
    convert::Infallible,
    sync::{Arc, Mutex},
};

use http::Uri;
use http_body_util::{BodyExt, StreamBody, combinators::BoxBody};
use hyper::body::Frame;
use tower::service_fn;

use super::*;
use crate::observe::{Counted, Tries};

type AppBody = BoxBody<Bytes, Infallible>;

/// What the scripted FinCode does on each try.
#[derive(Clone, Copy, Debug)]
enum Answer {
    Status(u16),
    /// `Retry-After: n` with the status.
    StatusAfter(u16, u64),
    /// The connection never opened.
    Refused,
    /// The connection broke after the request went out.
    Reset,
    /// No answer for an hour.
    Hang,
    /// FinCode's 401, after which the authorize layer renewed the token and found the
    /// request safe to send twice (it marks the response [`Renewed`]).
    Renewed401,
    /// The same, answered after this many seconds.
    Renewed401After(u64),
}

/// A try as the inner service saw it.
#[derive(Clone, Debug)]
struct Seen {
    key: Option<String>,
    body: Bytes,
    at: Instant,
}

#[derive(Clone, Default)]
struct Script {
    answers: Arc<Mutex<VecDeque<Answer>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Script {
    fn new(answers: &[Answer]) -> Self {
        Self {
            answers: Arc::new(Mutex::new(answers.iter().copied().collect())),
            seen: Arc::default(),
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn service(
        self,
    ) -> impl Service<
        Request<Either<Full<Bytes>, AppBody>>,
        Response = Response<()>,
        Error = SidecarError,
        Future = impl Send,
    > + Clone
    + Send
    + 'static {
        let script = self;
        service_fn(move |req: Request<Either<Full<Bytes>, AppBody>>| {
            let script = script.clone();
            async move {
                if let Some(counted) = req.extensions().get::<Counted>() {
                    counted.tries.start();
                }
                let key = req
                    .headers()
                    .get(IDEMPOTENCY_KEY)
                    .map(|v| v.to_str().unwrap().to_owned());
                let body = req.into_body().collect().await.unwrap().to_bytes();
                script.seen.lock().unwrap().push(Seen {
                    key,
                    body,
                    at: Instant::now(),
                });
                let answer = script
                    .answers
                    .lock()
                    .unwrap()
                    .pop_front()
                    .unwrap_or(Answer::Status(200));
                match answer {
                    Answer::Status(status) => Ok(response(status, None)),
                    Answer::StatusAfter(status, after) => Ok(response(status, Some(after))),
                    Answer::Refused => Err(SidecarError::new(
                        ErrorKind::UpstreamUnreachable,
                        "connection refused",
                    )
                    .unsent()),
                    Answer::Reset => Err(SidecarError::new(
                        ErrorKind::UpstreamUnreachable,
                        "connection reset",
                    )),
                    Answer::Hang => {
                        tokio::time::sleep(Duration::from_hours(1)).await;
                        Ok(response(200, None))
                    }
                    Answer::Renewed401 => Ok(renewed_401()),
                    Answer::Renewed401After(secs) => {
                        tokio::time::sleep(Duration::from_secs(secs)).await;
                        Ok(renewed_401())
                    }
                }
            }
        })
    }
}

/// FinCode's 401 as the authorize layer marks it after renewing the token.
fn renewed_401() -> Response<()> {
    let mut response = response(401, None);
    response.extensions_mut().insert(Renewed);
    response
}

fn response(status: u16, retry_after: Option<u64>) -> Response<()> {
    let mut response = Response::new(());
    *response.status_mut() = StatusCode::from_u16(status).unwrap();
    if let Some(after) = retry_after {
        response
            .headers_mut()
            .insert(http::header::RETRY_AFTER, HeaderValue::from(after));
    }
    response
}

fn config() -> RetryConfig {
    RetryConfig {
        max_attempts: 4,
        backoff_base: Duration::from_millis(100),
        backoff_cap: Duration::from_secs(1),
        per_try_timeout: Duration::from_secs(2),
        deadline: Duration::from_secs(10),
        retry_after_cap: Duration::from_secs(5),
        budget_ratio: 1.0,
        budget_min_per_second: 100,
        budget_window: Duration::from_secs(10),
        max_replay_body: 1024,
        mint_idempotency_key: false,
    }
}

struct Harness {
    layer: RetryLayer,
    throttle: Throttle,
    registry: Registry,
}

/// A [`harness`] over [`config`] that mints idempotency keys.
fn minting_harness() -> Harness {
    harness(&RetryConfig {
        mint_idempotency_key: true,
        ..config()
    })
}

fn harness(config: &RetryConfig) -> Harness {
    harness_with_request_timeout(config, Duration::from_secs(30))
}

/// A [`harness`] whose `upstream.request_timeout` is `request_timeout`.
fn harness_with_request_timeout(config: &RetryConfig, request_timeout: Duration) -> Harness {
    let throttle = Throttle::default();
    let mut registry = Registry::default();
    let layer = RetryLayer::new(
        config,
        request_timeout,
        throttle.clone(),
        Duration::from_secs(1),
        &mut registry,
    );
    Harness {
        layer,
        throttle,
        registry,
    }
}

fn request(method: Method, key: Option<&str>, body: &'static str) -> (Request<AppBody>, Tries) {
    let mut req = Request::new(Full::new(Bytes::from_static(body.as_bytes())).boxed());
    *req.method_mut() = method;
    *req.uri_mut() = Uri::from_static("/transactionmanagement/create-transaction");
    if let Some(key) = key {
        req.headers_mut()
            .insert(IDEMPOTENCY_KEY, HeaderValue::from_str(key).unwrap());
    }
    let tries = Tries::default();
    req.extensions_mut().insert(Counted {
        route: "/transactionmanagement/create-transaction",
        tries: tries.clone(),
    });
    (req, tries)
}

/// A body that declares no size (chunked): it cannot be kept for a replay.
fn streamed(body: &'static str) -> AppBody {
    let frames = futures_util::stream::iter([Ok::<_, Infallible>(Frame::data(
        Bytes::from_static(body.as_bytes()),
    ))]);
    StreamBody::new(frames).boxed()
}

async fn call(
    h: &Harness,
    script: &Script,
    req: Request<AppBody>,
) -> Result<Response<()>, SidecarError> {
    h.layer.layer(script.clone().service()).oneshot(req).await
}

fn metric(h: &Harness, line: &str) -> bool {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &h.registry).unwrap();
    text.lines().any(|l| l == line)
}

#[tokio::test(start_paused = true)]
async fn idempotent_requests_are_retried_until_an_answer() {
    let h = harness(&config());
    let script = Script::new(&[Answer::Status(503), Answer::Reset, Answer::Status(502)]);
    let (req, tries) = request(Method::GET, None, "");
    let response = call(&h, &script, req).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(tries.count(), 4);
    assert!(response.headers().get(RETRY_STOPPED_HEADER).is_none());
    assert!(metric(&h, "fincode_retries_total{reason=\"status_503\"} 1"));
    assert!(metric(&h, "fincode_retries_total{reason=\"reset\"} 1"));
    assert!(metric(&h, "fincode_retries_total{reason=\"status_502\"} 1"));
}

#[tokio::test(start_paused = true)]
async fn keyed_posts_are_retried_with_the_same_body_and_key() {
    let h = harness(&config());
    let script = Script::new(&[Answer::Reset, Answer::Status(504)]);
    let (req, tries) = request(Method::POST, Some("k-1"), "{\"amount\":1}");
    let response = call(&h, &script, req).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(tries.count(), 3);
    for seen in script.seen() {
        assert_eq!(seen.key.as_deref(), Some("k-1"));
        assert_eq!(seen.body, "{\"amount\":1}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_keyless_post_that_may_have_arrived_is_never_sent_again() {
    for answer in [
        Answer::Status(503),
        Answer::Status(502),
        Answer::Status(429),
        Answer::Reset,
    ] {
        let h = harness(&config());
        let script = Script::new(&[answer]);
        let (req, tries) = request(Method::POST, None, "{}");
        let result = call(&h, &script, req).await;
        assert_eq!(script.seen().len(), 1, "{answer:?}");
        assert_eq!(tries.count(), 1);
        let stopped = match &result {
            Ok(response) => response.headers()[RETRY_STOPPED_HEADER].clone(),
            Err(error) => {
                let response = error.to_response::<Full<Bytes>>("id");
                assert!(
                    error.detail().contains("X-Idempotency-Key"),
                    "{}",
                    error.detail()
                );
                response.headers()[RETRY_STOPPED_HEADER].clone()
            }
        };
        assert_eq!(stopped, "not_idempotent", "{answer:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_keyless_post_is_retried_when_the_connection_never_opened() {
    let h = harness(&config());
    let script = Script::new(&[Answer::Refused, Answer::Refused]);
    let (req, tries) = request(Method::POST, None, "{}");
    let response = call(&h, &script, req).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(tries.count(), 3);
    assert!(metric(&h, "fincode_retries_total{reason=\"connect\"} 2"));
}

#[tokio::test(start_paused = true)]
async fn minted_keys_make_posts_retryable_and_are_echoed() {
    let h = minting_harness();
    let script = Script::new(&[Answer::Status(503)]);
    let (req, _) = request(Method::POST, None, "{}");
    let response = call(&h, &script, req).await.unwrap();
    let seen = script.seen();
    assert_eq!(seen.len(), 2);
    let key = seen[0].key.clone().expect("a key was minted");
    assert_eq!(
        seen[1].key.as_deref(),
        Some(key.as_str()),
        "the same key on the retry"
    );
    assert_eq!(response.headers()[IDEMPOTENCY_KEY], key.as_str());
    assert!(uuid::Uuid::parse_str(&key).is_ok());

    // A key the app sent is never replaced, and GETs get none.
    let script = Script::new(&[]);
    let (req, _) = request(Method::POST, Some("mine"), "{}");
    let response = call(&h, &script, req).await.unwrap();
    assert_eq!(script.seen()[0].key.as_deref(), Some("mine"));
    assert!(response.headers().get(IDEMPOTENCY_KEY).is_none());
    let (req, _) = request(Method::GET, None, "");
    call(&h, &script, req).await.unwrap();
    assert_eq!(script.seen()[1].key, None);
}

#[tokio::test(start_paused = true)]
async fn a_blank_key_is_no_key() {
    // Without minting: a keyless POST, sent once.
    let h = harness(&config());
    for blank in ["", "  "] {
        let script = Script::new(&[Answer::Status(503), Answer::Status(503)]);
        let (req, tries) = request(Method::POST, Some(blank), "{}");
        let response = call(&h, &script, req).await.unwrap();
        assert_eq!(response.status(), 503, "{blank:?}");
        assert_eq!(tries.count(), 1, "{blank:?}");
        assert_eq!(response.headers()[RETRY_STOPPED_HEADER], "not_idempotent");
        assert!(
            response.headers().get(IDEMPOTENCY_KEY).is_none(),
            "nothing was minted"
        );
    }

    // With minting: the blank value is replaced by a minted key, as a missing one is.
    let h = minting_harness();
    let script = Script::new(&[Answer::Status(503), Answer::Status(503)]);
    let (mut req, tries) = request(Method::POST, Some(""), "{}");
    req.headers_mut()
        .append(IDEMPOTENCY_KEY, HeaderValue::from_static(" "));
    let response = call(&h, &script, req).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(tries.count(), 3);
    let key = response.headers()[IDEMPOTENCY_KEY]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(uuid::Uuid::parse_str(&key).is_ok());
    for seen in script.seen() {
        assert_eq!(seen.key.as_deref(), Some(key.as_str()));
    }
}

#[tokio::test(start_paused = true)]
async fn conflicting_keys_are_no_key_and_are_not_replaced() {
    let h = minting_harness();
    let script = Script::new(&[Answer::Status(503)]);
    let (mut req, tries) = request(Method::POST, Some("order-1"), "{}");
    req.headers_mut()
        .append(IDEMPOTENCY_KEY, HeaderValue::from_static("order-2"));
    let response = call(&h, &script, req).await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(
        tries.count(),
        1,
        "two different keys: not safe to send twice"
    );
    assert_eq!(response.headers()[RETRY_STOPPED_HEADER], "not_idempotent");
    assert_eq!(
        script.seen()[0].key.as_deref(),
        Some("order-1"),
        "the app's own keys are never replaced"
    );
}

#[tokio::test(start_paused = true)]
async fn streamed_bodies_are_sent_once() {
    let h = harness(&config());
    let script = Script::new(&[Answer::Status(503)]);
    let (mut req, tries) = request(Method::PUT, None, "");
    *req.body_mut() = streamed("{\"big\":true}");
    let response = call(&h, &script, req).await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(tries.count(), 1);
    assert_eq!(response.headers()[RETRY_STOPPED_HEADER], "body_too_large");
    assert_eq!(script.seen()[0].body, "{\"big\":true}");

    // Declared over retry.max_replay_body: streamed as well.
    let big: &'static str = Box::leak("x".repeat(2000).into_boxed_str());
    let script = Script::new(&[Answer::Status(503)]);
    let (req, _) = request(Method::PUT, None, big);
    let response = call(&h, &script, req).await.unwrap();
    assert_eq!(response.headers()[RETRY_STOPPED_HEADER], "body_too_large");
    assert_eq!(script.seen()[0].body.len(), 2000);
}

#[tokio::test(start_paused = true)]
async fn attempts_are_capped_and_the_last_answer_goes_to_the_app() {
    let h = harness(&config());
    let script = Script::new(&[Answer::Status(503); 10]);
    let (req, tries) = request(Method::GET, None, "");
    let response = call(&h, &script, req).await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(tries.count(), 4);
    assert_eq!(response.headers()[RETRY_STOPPED_HEADER], "max_attempts");
}

#[tokio::test(start_paused = true)]
async fn backoff_waits_stay_under_the_doubling_ceilings() {
    let h = harness(&config());
    let script = Script::new(&[Answer::Status(503); 3]);
    let (req, _) = request(Method::GET, None, "");
    call(&h, &script, req).await.unwrap();
    let at: Vec<_> = script.seen().iter().map(|s| s.at).collect();
    for (retry, pair) in at.windows(2).enumerate() {
        let waited = pair[1] - pair[0];
        let ceiling = Duration::from_millis(100) * 2u32.pow(u32::try_from(retry).unwrap());
        assert!(waited <= ceiling, "retry {retry}: {waited:?} > {ceiling:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_waited_out_up_to_the_cap() {
    let h = harness(&config());
    let script = Script::new(&[Answer::StatusAfter(503, 3)]);
    let (req, _) = request(Method::GET, None, "");
    call(&h, &script, req).await.unwrap();
    let seen = script.seen();
    assert!(seen[1].at - seen[0].at >= Duration::from_secs(3));

    // Over retry.retry_after_cap (5s): FinCode's answer goes to the app at once.
    let script = Script::new(&[Answer::StatusAfter(503, 60)]);
    let (req, tries) = request(Method::GET, None, "");
    let response = call(&h, &script, req).await.unwrap();
    assert_eq!(tries.count(), 1);
    assert_eq!(
        response.headers()[RETRY_STOPPED_HEADER],
        "retry_after_too_long"
    );
}

#[tokio::test(start_paused = true)]
async fn a_429_pauses_the_route_for_everyone() {
    let h = harness(&config());
    let script = Script::new(&[Answer::StatusAfter(429, 2)]);
    let (req, _) = request(Method::GET, None, "");
    let started = Instant::now();
    call(&h, &script, req).await.unwrap();
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert!(metric(&h, "fincode_retries_total{reason=\"status_429\"} 1"));
    // The throttle was told; another 429 without Retry-After uses upstream_backoff.
    h.throttle.pause("x", Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn no_try_starts_or_runs_past_the_deadline() {
    let h = harness(&RetryConfig {
        per_try_timeout: Duration::from_secs(2),
        deadline: Duration::from_secs(5),
        max_attempts: 10,
        ..config()
    });
    let script = Script::new(&[Answer::Hang; 10]);
    let (req, tries) = request(Method::GET, None, "");
    let started = Instant::now();
    let error = call(&h, &script, req).await.unwrap_err();
    assert!(
        started.elapsed() <= Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(error.kind(), ErrorKind::UpstreamTimeout);
    assert!(tries.count() >= 2, "{}", tries.count());
    let response = error.to_response::<Full<Bytes>>("id");
    assert_eq!(response.headers()[RETRY_STOPPED_HEADER], "deadline");
    assert!(metric(&h, "fincode_retries_total{reason=\"timeout\"} 1") || tries.count() > 2);
}

#[tokio::test(start_paused = true)]
async fn a_try_is_bounded_by_the_shorter_of_per_try_timeout_and_request_timeout() {
    // (retry.per_try_timeout, upstream.request_timeout, retry.deadline): the try ends at
    // the shortest, and the error names the setting that ended it.
    for (per_try, request_timeout, deadline, ends, key) in [
        (10, 3, 30, 3, "upstream.request_timeout"),
        (2, 3, 30, 2, "retry.per_try_timeout"),
        (10, 8, 5, 5, "retry.deadline"),
    ] {
        let h = harness_with_request_timeout(
            &RetryConfig {
                per_try_timeout: Duration::from_secs(per_try),
                deadline: Duration::from_secs(deadline),
                max_attempts: 1,
                ..config()
            },
            Duration::from_secs(request_timeout),
        );
        let script = Script::new(&[Answer::Hang]);
        let (req, tries) = request(Method::GET, None, "");
        let started = Instant::now();
        let error = call(&h, &script, req).await.unwrap_err();
        assert_eq!(started.elapsed(), Duration::from_secs(ends), "{key}");
        assert_eq!(error.kind(), ErrorKind::UpstreamTimeout);
        assert!(error.to_string().contains(key), "{key}: {error}");
        assert_eq!(tries.count(), 1);
    }
}

#[tokio::test(start_paused = true)]
async fn the_budget_caps_retries_during_an_outage() {
    // No ratio, a floor of 1 retry per second over a 1s window: one retry in all.
    let h = harness(&RetryConfig {
        budget_ratio: 0.0,
        budget_min_per_second: 1,
        budget_window: Duration::from_secs(1),
        ..config()
    });
    let script = Script::new(&[Answer::Status(503); 100]);
    let mut tries_total = 0;
    for _ in 0..10 {
        let (req, tries) = request(Method::GET, None, "");
        let response = call(&h, &script, req).await.unwrap();
        tries_total += tries.count();
        assert_eq!(response.status(), 503);
    }
    assert_eq!(
        tries_total, 11,
        "10 requests and the one retry the floor allows"
    );
    assert!(metric(&h, "fincode_retry_budget_exhausted_total 10"));
}

#[tokio::test(start_paused = true)]
async fn budget_arithmetic_ratio_plus_floor_over_the_window() {
    // 50 % of requests, no floor: 10 requests buy 5 retries.
    let budget = TpsBudget::new(Duration::from_secs(10), 0, 0.5);
    for _ in 0..10 {
        budget.deposit();
    }
    let granted = (0..20).filter(|_| budget.withdraw()).count();
    assert_eq!(granted, 5);
    // Deposits age out of the window: after it, nothing is left.
    for _ in 0..10 {
        budget.deposit();
    }
    tokio::time::advance(Duration::from_secs(11)).await;
    assert!(!budget.withdraw());
    // A floor of 2/s over 10s allows 20 retries with no requests at all.
    let budget = TpsBudget::new(Duration::from_secs(10), 2, 0.2);
    assert_eq!((0..50).filter(|_| budget.withdraw()).count(), 20);
}

#[tokio::test(start_paused = true)]
async fn non_transient_errors_are_not_retried() {
    let h = harness(&config());
    for status in [400, 401, 404, 422, 500] {
        let script = Script::new(&[Answer::Status(status)]);
        let (req, tries) = request(Method::GET, None, "");
        let response = call(&h, &script, req).await.unwrap();
        assert_eq!(response.status(), status);
        assert_eq!(tries.count(), 1, "{status}");
        assert!(response.headers().get(RETRY_STOPPED_HEADER).is_none());
    }
}

/// A body that declares a small size (so it would be kept for replay) and then never
/// sends it: an app trickling its request.
struct Stalled;

impl http_body::Body for Stalled {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        std::task::Poll::Pending
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(10)
    }
}

#[tokio::test(start_paused = true)]
async fn buffering_the_body_for_replay_happens_under_the_deadline() {
    let h = harness(&RetryConfig {
        deadline: Duration::from_secs(5),
        ..config()
    });
    let script = Script::new(&[]);
    let (mut req, _tries) = request(Method::POST, Some("key-1"), "");
    *req.body_mut() = Stalled.boxed();
    let started = Instant::now();
    let error = tokio::time::timeout(Duration::from_mins(1), call(&h, &script, req))
        .await
        .expect("the trickling body held the request past retry.deadline")
        .unwrap_err();
    assert!(
        started.elapsed() <= Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // The app's slowness, not FinCode's: 408 body_timeout, never upstream_timeout.
    let response = error.to_response::<Full<Bytes>>("id");
    assert_eq!(response.status(), 408);
    assert_eq!(
        response.headers()[crate::SIDECAR_ERROR_HEADER],
        "body_timeout"
    );
    assert_eq!(
        response.headers()[http::header::CONTENT_TYPE],
        "application/problem+json"
    );
    assert!(script.seen().is_empty(), "nothing was sent to FinCode");
}

/// Five apps stalling their uploads are not five FinCode failures: the breaker above the
/// retry layer stays closed, and FinCode stays reachable for everyone else.
#[tokio::test(start_paused = true)]
async fn stalled_app_bodies_never_open_the_breaker() {
    use crate::breaker::{Breaker, BreakerLayer, State};

    let h = harness(&RetryConfig {
        deadline: Duration::from_secs(5),
        ..config()
    });
    let mut registry = Registry::default();
    let breaker = Breaker::new(
        &fincode_config::BreakerConfig {
            consecutive_failures: 2,
            min_requests: 2,
            ..fincode_config::BreakerConfig::default()
        },
        "fincode",
        &mut registry,
    );
    let script = Script::new(&[]);
    for _ in 0..5 {
        let (mut req, _tries) = request(Method::POST, Some("key-1"), "");
        *req.body_mut() = Stalled.boxed();
        let service =
            BreakerLayer::new(breaker.clone()).layer(h.layer.layer(script.clone().service()));
        service.oneshot(req).await.unwrap_err();
    }
    assert_eq!(breaker.state(), State::Closed);
    let (req, _tries) = request(Method::POST, Some("key-2"), "{}");
    let service = BreakerLayer::new(breaker.clone()).layer(h.layer.layer(script.clone().service()));
    assert_eq!(service.oneshot(req).await.unwrap().status(), 200);
}

/// A 401 the authorize layer marked (token renewed, request safe to send twice) is sent
/// again at once with the same head and body, as part of the same attempt: no backoff,
/// no retry counted, and once per attempt, so a token FinCode keeps refusing cannot loop.
#[tokio::test(start_paused = true)]
async fn a_renewed_401_is_sent_again_once_in_the_same_attempt() {
    let h = harness(&config());
    let script = Script::new(&[Answer::Renewed401, Answer::Status(200)]);
    let (req, tries) = request(Method::POST, Some("k-401"), "{\"amount\":1}");
    let started = Instant::now();
    let response = call(&h, &script, req).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(tries.count(), 2);
    let seen = script.seen();
    assert_eq!(seen.len(), 2);
    for seen in &seen {
        assert_eq!(seen.key.as_deref(), Some("k-401"));
        assert_eq!(seen.body, "{\"amount\":1}");
        assert_eq!(seen.at, started, "no backoff before the replay");
    }
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &h.registry).unwrap();
    assert!(
        text.lines()
            .filter(|l| l.starts_with("fincode_retries_total{"))
            .all(|l| l.ends_with(" 0")),
        "not a retry: {text}"
    );

    // Refused again after the replay: FinCode's 401 goes to the app (401 is no reason
    // to retry), after two tries, not a loop.
    let script = Script::new(&[Answer::Renewed401, Answer::Renewed401, Answer::Status(200)]);
    let (req, tries) = request(Method::GET, None, "");
    let response = call(&h, &script, req).await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(tries.count(), 2);
    assert_eq!(script.seen().len(), 2);
}

/// The retry layer's own checks hold even when a 401 is marked: a keyless POST, or a
/// streamed body, is never sent twice.
#[tokio::test(start_paused = true)]
async fn a_renewed_401_is_never_sent_again_when_the_request_may_not_be() {
    let h = harness(&config());
    let script = Script::new(&[Answer::Renewed401, Answer::Status(200)]);
    let (req, _) = request(Method::POST, None, "{\"amount\":1}");
    let response = call(&h, &script, req).await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(script.seen().len(), 1, "a payment is never sent twice");

    let script = Script::new(&[Answer::Renewed401, Answer::Status(200)]);
    let (mut req, _) = request(Method::PUT, None, "");
    *req.body_mut() = streamed("{\"big\":true}");
    let response = call(&h, &script, req).await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(
        script.seen().len(),
        1,
        "a streamed body cannot be sent again"
    );
}

/// A marked 401 that arrives as the call's deadline is reached is not sent again: like a
/// retry, the replay never starts at or past `retry.deadline`.
#[tokio::test(start_paused = true)]
async fn a_renewed_401_at_the_deadline_is_not_sent_again() {
    let h = harness(&RetryConfig {
        per_try_timeout: Duration::from_secs(2),
        deadline: Duration::from_secs(2),
        ..config()
    });
    let script = Script::new(&[Answer::Renewed401After(2), Answer::Status(200)]);
    let (req, _) = request(Method::GET, None, "");
    let response = call(&h, &script, req).await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(script.seen().len(), 1);
}
