use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use fincode_config::BreakerConfig;
use http::{Request, Response, StatusCode, header::RETRY_AFTER};
use prometheus_client::{encoding::text::encode, registry::Registry};
use tower::{Layer, Service, ServiceExt, service_fn, util::BoxCloneService};

use super::{Breaker, BreakerLayer, CircuitBreaker, ResponseFuture, State};
use crate::{ErrorKind, SidecarError};

const UPSTREAM: &str = "acme.fincode.tech";

/// What the scripted inner service answers for one request.
#[derive(Clone, Copy, Debug)]
enum Reply {
    Status(u16),
    Error(ErrorKind),
}

type Inner = BoxCloneService<Request<Reply>, Response<()>, SidecarError>;

struct Harness {
    service: CircuitBreaker<Inner>,
    breaker: Breaker,
    registry: Registry,
    calls: Arc<AtomicUsize>,
}

/// Three failures in a row open it; the ratio check needs 10 requests in 10s; two probes.
fn config() -> BreakerConfig {
    BreakerConfig {
        enabled: true,
        consecutive_failures: 3,
        failure_ratio: 0.5,
        min_requests: 10,
        window: Duration::from_secs(10),
        open_for: Duration::from_secs(15),
        half_open_probes: 2,
    }
}

/// `config()` with the consecutive threshold out of reach, to test the ratio alone.
fn ratio_only() -> BreakerConfig {
    BreakerConfig {
        consecutive_failures: 1000,
        ..config()
    }
}

fn harness(config: &BreakerConfig) -> Harness {
    let mut registry = Registry::default();
    let breaker = Breaker::new(config, UPSTREAM, &mut registry);
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let inner = service_fn(move |req: Request<Reply>| {
        counter.fetch_add(1, Ordering::SeqCst);
        let reply = *req.body();
        async move {
            match reply {
                Reply::Status(status) => {
                    let mut response = Response::new(());
                    *response.status_mut() = StatusCode::from_u16(status).unwrap();
                    Ok(response)
                }
                Reply::Error(kind) => Err(SidecarError::new(kind, "scripted")),
            }
        }
    });
    Harness {
        service: BreakerLayer::new(breaker.clone()).layer(BoxCloneService::new(inner)),
        breaker,
        registry,
        calls,
    }
}

impl Harness {
    /// Checks the breaker's state; `why` says what the test expects of it.
    #[track_caller]
    fn assert_state(&self, expected: State, why: &str) {
        assert_eq!(self.breaker.state(), expected, "{why}");
    }

    /// Sends one request and waits for the answer.
    async fn send(&mut self, reply: Reply) -> Result<Response<()>, SidecarError> {
        self.start(reply).await.await
    }

    /// Sends one request (admission happens here) without waiting for the answer.
    async fn start(
        &mut self,
        reply: Reply,
    ) -> ResponseFuture<<Inner as Service<Request<Reply>>>::Future> {
        self.service.ready().await.unwrap();
        self.service.call(Request::new(reply))
    }

    async fn send_all(&mut self, replies: &[Reply]) {
        for reply in replies {
            let _ = self.send(*reply).await;
        }
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn metrics(&self) -> String {
        let mut text = String::new();
        encode(&mut text, &self.registry).unwrap();
        text
    }

    /// Trips the breaker with `consecutive_failures` failures in a row.
    async fn trip(&mut self) {
        self.send_all(&[FAIL; 3]).await;
        assert_eq!(self.breaker.state(), State::Open);
    }
}

const OK: Reply = Reply::Status(200);
const FAIL: Reply = Reply::Status(503);

/// Asserts a fail-fast refusal and returns its `Retry-After` in seconds.
fn refused(result: Result<Response<()>, SidecarError>) -> (u64, String) {
    let error = result.expect_err("the breaker should have refused the request");
    assert_eq!(error.kind(), ErrorKind::CircuitOpen);
    let response = error.to_response::<bytes::Bytes>("test");
    let retry_after = response.headers()[RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    (retry_after, error.detail().to_owned())
}

/// An app stalling its upload is the app's fault: however many, in a row or as a
/// share of the window, they never open the circuit for everyone's payments.
#[tokio::test(start_paused = true)]
async fn stalled_app_bodies_never_open_it() {
    let mut h = harness(&config());
    for _ in 0..50 {
        h.send(Reply::Error(ErrorKind::RequestBodyTimeout))
            .await
            .unwrap_err();
    }
    assert_eq!(h.breaker.state(), State::Closed);
    // Neither do they count as successes: two FinCode failures before them and one
    // after still make three in a row.
    h.send_all(&[FAIL, FAIL]).await;
    h.send(Reply::Error(ErrorKind::RequestBodyTimeout))
        .await
        .unwrap_err();
    h.send(FAIL).await.unwrap();
    assert_eq!(h.breaker.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn a_reload_keeps_the_state_and_applies_the_new_thresholds() {
    let mut h = harness(&config());
    h.trip().await;
    let mut reloaded = config();
    reloaded.consecutive_failures = 5;
    h.breaker.reconfigure(&reloaded);
    // Still open: a reload is no way to wave traffic through to a failing FinCode.
    assert_eq!(h.breaker.state(), State::Open);
    refused(h.send(OK).await);

    // Once closed again, it takes five failures in a row now, not three.
    let mut h = harness(&config());
    h.breaker.reconfigure(&reloaded);
    h.send_all(&[FAIL; 4]).await;
    assert_eq!(h.breaker.state(), State::Closed);
    h.send(FAIL).await.unwrap();
    assert_eq!(h.breaker.state(), State::Open);

    // Switched off by a reload, it lets everything through.
    reloaded.enabled = false;
    h.breaker.reconfigure(&reloaded);
    h.send(OK).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn opens_after_consecutive_failures() {
    let mut h = harness(&config());
    h.send(Reply::Error(ErrorKind::UpstreamUnreachable))
        .await
        .unwrap_err();
    h.send(Reply::Status(502)).await.unwrap();
    assert_eq!(h.breaker.state(), State::Closed);
    h.send(Reply::Error(ErrorKind::UpstreamTimeout))
        .await
        .unwrap_err();
    assert_eq!(h.breaker.state(), State::Open);
    assert_eq!(h.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn success_resets_the_consecutive_count() {
    let mut h = harness(&config());
    h.send_all(&[FAIL, FAIL, OK, FAIL, FAIL]).await;
    assert_eq!(h.breaker.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn does_not_open_below_min_requests() {
    let mut h = harness(&ratio_only());
    h.send_all(&[FAIL; 9]).await;
    h.assert_state(State::Closed, "9 of 9 failed, but 9 < min_requests");
}

#[tokio::test(start_paused = true)]
async fn opens_on_failure_ratio_over_window() {
    let mut h = harness(&ratio_only());
    for _ in 0..4 {
        h.send_all(&[OK, FAIL]).await;
        tokio::time::advance(Duration::from_secs(1)).await;
    }
    h.send_all(&[OK, OK]).await;
    h.assert_state(State::Closed, "4 of 10 failed");
    h.send_all(&[FAIL]).await;
    h.assert_state(State::Closed, "5 of 11 failed");
    h.send_all(&[FAIL]).await;
    h.assert_state(State::Open, "6 of 12 failed");
    let (_, detail) = refused(h.send(OK).await);
    assert!(
        detail.contains("failed 6 of 12 requests within 10s"),
        "{detail}"
    );
}

#[tokio::test(start_paused = true)]
async fn old_outcomes_slide_out_of_the_window() {
    let mut h = harness(&ratio_only());
    h.send_all(&[FAIL; 9]).await;
    tokio::time::advance(Duration::from_secs(11)).await;
    h.send_all(&[FAIL; 9]).await;
    h.assert_state(State::Closed, "the first 9 left the window");
    tokio::time::advance(Duration::from_secs(5)).await;
    h.send_all(&[FAIL]).await;
    h.assert_state(State::Open, "10 of 10 failed within 10s");
}

#[tokio::test(start_paused = true)]
async fn open_fails_fast_without_calling_upstream() {
    let mut h = harness(&config());
    h.trip().await;
    tokio::time::advance(Duration::from_secs(3)).await;
    let (retry_after, detail) = refused(h.send(OK).await);
    assert_eq!(
        h.calls(),
        3,
        "the inner service must not be called while open"
    );
    assert_eq!(retry_after, 12);
    assert_eq!(
        detail,
        "FinCode (acme.fincode.tech) failed 3 requests in a row; the sidecar fails fast \
         for another 12s, then lets probes through (breaker.open_for)"
    );
    tokio::time::advance(Duration::from_millis(11_500)).await;
    let (retry_after, _) = refused(h.send(OK).await);
    assert_eq!(retry_after, 1, "0.5s left rounds up");
    assert_eq!(h.breaker.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn half_open_admits_exactly_the_configured_probes() {
    let mut h = harness(&config());
    h.trip().await;
    tokio::time::advance(Duration::from_secs(15)).await;
    assert_eq!(h.breaker.state(), State::HalfOpen);
    let first = h.start(OK).await;
    let second = h.start(OK).await;
    let (retry_after, detail) = refused(h.send(OK).await);
    assert_eq!(retry_after, 1);
    assert!(detail.contains("half_open_probes"), "{detail}");
    assert_eq!(
        h.calls(),
        5,
        "two probes reached the upstream, the third did not"
    );
    drop((first, second));
}

#[tokio::test(start_paused = true)]
async fn probe_successes_close_it() {
    let mut h = harness(&config());
    h.trip().await;
    tokio::time::advance(Duration::from_secs(15)).await;
    let first = h.start(Reply::Status(201)).await;
    let second = h.start(OK).await;
    first.await.unwrap();
    assert_eq!(h.breaker.state(), State::HalfOpen);
    second.await.unwrap();
    assert_eq!(h.breaker.state(), State::Closed);
    // Fresh counters: the failures from before the trip are forgotten.
    h.send_all(&[FAIL, FAIL]).await;
    assert_eq!(h.breaker.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn probe_failure_reopens_it() {
    let mut h = harness(&config());
    h.trip().await;
    tokio::time::advance(Duration::from_secs(15)).await;
    let slow_success = h.start(OK).await;
    h.send(Reply::Error(ErrorKind::UpstreamTls))
        .await
        .unwrap_err();
    assert_eq!(h.breaker.state(), State::Open);
    // The other probe, from the half-open period that just ended, changes nothing.
    slow_success.await.unwrap();
    assert_eq!(h.breaker.state(), State::Open);
    let (retry_after, detail) = refused(h.send(OK).await);
    assert_eq!(retry_after, 15, "a fresh open_for");
    assert!(detail.contains("failed a probe request"), "{detail}");
}

#[tokio::test(start_paused = true)]
async fn dropped_probe_frees_its_slot() {
    let mut h = harness(&config());
    h.trip().await;
    tokio::time::advance(Duration::from_secs(15)).await;
    let first = h.start(OK).await;
    let second = h.start(OK).await;
    drop(first);
    h.assert_state(State::HalfOpen, "a hang-up is neither success nor failure");
    let third = h.start(OK).await;
    assert_eq!(h.calls(), 6, "the freed slot admitted another probe");
    refused(h.send(OK).await);
    second.await.unwrap();
    third.await.unwrap();
    assert_eq!(h.breaker.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn client_errors_succeed_and_sidecar_errors_are_neutral() {
    // The ratio check is kept out of reach: only the consecutive count is under test.
    let mut h = harness(&BreakerConfig {
        min_requests: 1000,
        ..config()
    });
    h.send_all(&[
        FAIL,
        FAIL,
        Reply::Status(429),
        FAIL,
        FAIL,
        Reply::Status(404),
    ])
    .await;
    h.send_all(&[FAIL, FAIL, Reply::Status(302)]).await;
    h.assert_state(State::Closed, "4xx and 3xx reset the count");
    h.send_all(&[FAIL, FAIL]).await;
    for kind in [
        ErrorKind::BodyTooLarge,
        ErrorKind::BadRequest,
        ErrorKind::AuthFailed,
        ErrorKind::RateLimited,
        ErrorKind::HeadersTooLarge,
        ErrorKind::RequestBodyTimeout,
    ] {
        h.send(Reply::Error(kind)).await.unwrap_err();
    }
    h.assert_state(State::Closed, "neutral errors are not failures");
    h.send(Reply::Status(500)).await.unwrap();
    h.assert_state(State::Open, "nor do they reset the count");
}

#[tokio::test(start_paused = true)]
async fn stale_outcome_from_before_the_trip_is_ignored() {
    let mut h = harness(&config());
    let slow_failure = h.start(FAIL).await;
    h.trip().await;
    tokio::time::advance(Duration::from_secs(15)).await;
    let probe = h.start(OK).await;
    slow_failure.await.unwrap();
    h.assert_state(State::HalfOpen, "a closed-era failure is not a probe");
    probe.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn huge_open_for_does_not_overflow() {
    let mut h = harness(&BreakerConfig {
        open_for: Duration::MAX,
        ..config()
    });
    h.trip().await;
    refused(h.send(OK).await);
    assert_eq!(h.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn disabled_never_opens() {
    let mut h = harness(&BreakerConfig {
        enabled: false,
        ..config()
    });
    h.send_all(&[FAIL; 50]).await;
    assert_eq!(h.breaker.state(), State::Closed);
    assert_eq!(h.calls(), 50);
    assert!(
        h.metrics()
            .contains("fincode_circuit_breaker_state{upstream=\"acme.fincode.tech\"} 0")
    );
}

#[tokio::test(start_paused = true)]
async fn metrics_track_the_state() {
    let mut h = harness(&config());
    let text = h.metrics();
    assert!(
        text.contains("fincode_circuit_breaker_state{upstream=\"acme.fincode.tech\"} 0"),
        "{text}"
    );
    for to in ["open", "half_open", "closed"] {
        let series = format!(
            "fincode_circuit_breaker_transitions_total{{upstream=\"acme.fincode.tech\",to=\"{to}\"}} 0"
        );
        assert!(text.contains(&series), "{series} missing from\n{text}");
    }
    h.trip().await;
    let text = h.metrics();
    assert!(
        text.contains("fincode_circuit_breaker_state{upstream=\"acme.fincode.tech\"} 2"),
        "{text}"
    );
    assert!(text.contains(
        "fincode_circuit_breaker_transitions_total{upstream=\"acme.fincode.tech\",to=\"open\"} 1"
    ), "{text}");
    tokio::time::advance(Duration::from_secs(15)).await;
    assert_eq!(h.breaker.state(), State::HalfOpen);
    assert!(
        h.metrics()
            .contains("fincode_circuit_breaker_state{upstream=\"acme.fincode.tech\"} 1")
    );
}
