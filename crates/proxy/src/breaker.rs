//! Circuit breaker: after repeated FinCode failures the sidecar answers at once with 503
//! `circuit_open` instead of piling more requests onto an upstream that is down.
//!
//! A failing payment API usually fails slowly (connect and response timeouts), so every
//! request the app keeps sending would hold a connection, a task and an app thread for
//! the full timeout, and add load to an upstream that is trying to recover. Failing fast
//! gives the app an immediate answer it can act on (`Retry-After` says when to come back)
//! and gives FinCode room to recover.
//!
//! The three states, with the `[breaker]` keys that drive them:
//!
//! - **closed**: requests pass and their outcomes are counted. The breaker opens after
//!   `consecutive_failures` failures in a row, or when at least `failure_ratio` of the
//!   requests in the last `window` failed and that window holds at least `min_requests`
//!   (so three unlucky requests at night do not open it).
//! - **open**: every request is refused at once for `open_for`. The move to half-open
//!   happens on the first request (or [`Breaker::state`] call) after that.
//! - **half-open**: up to `half_open_probes` requests at a time go through as probes.
//!   That many successes close the breaker; a single failure opens it again.
//!
//! What counts: a *failure* is FinCode being unreachable, timing out, failing TLS, or
//! answering 500, 502, 503 or 504. Any other answer, 4xx and 429 included, is a *success*:
//! FinCode is up and deciding. Errors the sidecar made itself (body too large, no token,
//! rate limited...) say nothing about FinCode's health and are not counted at all.
//!
//! The state is exported as the gauge `fincode_circuit_breaker_state` (0 closed,
//! 1 half-open, 2 open) and the counter `fincode_circuit_breaker_transitions_total`.

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    task::{Context, Poll},
    time::Duration,
};

use arc_swap::ArcSwap;
use fincode_config::BreakerConfig;
use http::{Request, Response, StatusCode};
use pin_project_lite::pin_project;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use tokio::time::Instant;
use tower::{Layer, Service};

use crate::{ErrorKind, SidecarError, error::whole_seconds};

/// How many slices the failure-ratio window is cut into. A fixed ring, so a flood of
/// requests costs counter increments, never memory. The window in effect is between
/// nine and ten tenths of `window` long (the oldest slice leaves whole).
const SLICES: usize = 10;

/// When all probe slots are taken the next one frees up as soon as a probe answers, so
/// the app is told to come back shortly rather than after a whole `open_for`.
const PROBES_BUSY_RETRY_AFTER: Duration = Duration::from_secs(1);

/// `open_for` is capped here (about a century: "until restarted") so that `now + open_for`
/// cannot overflow `Instant` whatever the config says.
const LONGEST_OPEN_FOR: Duration = Duration::from_hours(100 * 365 * 24);

/// Shared breaker state for one upstream. Cheap to clone (an `Arc` inside); every clone
/// sees and changes the same state.
///
/// ```
/// use fincode_proxy::breaker::{Breaker, BreakerLayer, State};
///
/// let mut registry = prometheus_client::registry::Registry::default();
/// let config = fincode_config::BreakerConfig::default();
/// let breaker = Breaker::new(&config, "acme.fincode.tech", &mut registry);
/// let _layer = BreakerLayer::new(breaker.clone());
/// assert_eq!(breaker.state(), State::Closed);
/// ```
#[derive(Clone, Debug)]
pub struct Breaker {
    shared: Arc<Shared>,
}

/// Where the breaker stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Requests pass; failures are counted.
    Closed,
    /// Requests are refused at once with 503 `circuit_open`.
    Open,
    /// A few probe requests pass to find out whether FinCode has recovered.
    HalfOpen,
}

/// Adds [`CircuitBreaker`] to a stack.
#[derive(Clone, Debug)]
pub struct BreakerLayer {
    breaker: Breaker,
}

/// Refuses requests while the [`Breaker`] is open and reports each outcome to it.
#[derive(Clone, Debug)]
pub struct CircuitBreaker<S> {
    inner: S,
    breaker: Breaker,
}

pin_project! {
    /// Either the refusal, ready at once, or the inner future with the ticket that
    /// reports its outcome to the breaker.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<F> {
        Refused { error: Option<SidecarError> },
        Admitted {
            #[pin]
            future: F,
            // `None` when the breaker is disabled: nothing to report.
            ticket: Option<Ticket>,
        },
    }
}

/// Everything behind the `Arc`: the settings (replaced whole on a config reload), the
/// metric handles and the mutable state.
#[derive(Debug)]
struct Shared {
    settings: ArcSwap<Settings>,
    upstream: Box<str>,
    metrics: BreakerMetrics,
    core: Mutex<Core>,
}

/// `BreakerConfig` with the degenerate values made safe once, so the hot path need not
/// care: a zero threshold would open on nothing, zero probes would never close.
#[derive(Debug)]
struct Settings {
    enabled: bool,
    consecutive_failures: u32,
    failure_ratio: f64,
    min_requests: u32,
    window: Duration,
    open_for: Duration,
    half_open_probes: u32,
}

/// The mutable state. Only ever touched under the mutex, never across an await.
#[derive(Debug)]
struct Core {
    phase: Phase,
    /// Bumped on every transition. A ticket remembers the generation it was issued in,
    /// so a slow request admitted before the breaker opened cannot, when it finally
    /// fails or succeeds, cut a later open period short or count as a probe.
    generation: u64,
    /// Failures in a row since the last success (closed only).
    consecutive: u32,
    /// Outcomes of the last `window` (closed only).
    window: Window,
}

#[derive(Clone, Copy, Debug)]
enum Phase {
    Closed,
    Open { until: Instant, trip: Trip },
    HalfOpen { in_flight: u32, successes: u32 },
}

/// Why the breaker opened, kept for the refusal detail and the log line.
#[derive(Clone, Copy, Debug)]
enum Trip {
    Consecutive { failures: u32 },
    Ratio { failures: u32, requests: u32 },
    Probe,
}

/// A state change, reported (logged) once the mutex is released.
#[derive(Clone, Copy, Debug)]
enum Change {
    Opened(Trip),
    HalfOpened,
    Closed,
}

/// Why a request was refused; turned into a [`SidecarError`] outside the lock.
#[derive(Clone, Copy, Debug)]
enum Refusal {
    Open(Trip, Duration),
    ProbesBusy(u32),
}

/// How a finished request reflects on FinCode's health.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Success,
    Failure,
    Neutral,
}

/// What an admitted request is to the breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// Admitted while closed: counts towards opening.
    Counted,
    /// Admitted while half-open: holds a probe slot until it finishes or is dropped.
    Probe,
}

/// Proof of admission. Reports the outcome exactly once; if the response future is
/// dropped first (the app hung up) the drop reports a neutral outcome, which frees a
/// probe slot that would otherwise stay taken and wedge the breaker half-open.
#[derive(Debug)]
struct Ticket {
    breaker: Breaker,
    generation: u64,
    role: Role,
    settled: bool,
}

/// A ring of per-slice outcome counts covering `window`.
#[derive(Debug)]
struct Window {
    origin: Instant,
    slice_nanos: u128,
    slices: [Slice; SLICES],
}

#[derive(Clone, Copy, Debug, Default)]
struct Slice {
    /// Which slice since `origin` these counts belong to; a stale index means empty.
    index: u64,
    requests: u32,
    failures: u32,
}

/// The metric handles, resolved once so that a transition is an atomic store and add.
#[derive(Debug)]
struct BreakerMetrics {
    state: Gauge,
    to_open: Counter,
    to_half_open: Counter,
    to_closed: Counter,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    upstream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransitionLabels {
    upstream: String,
    to: &'static str,
}

// === impl Breaker ===

impl Breaker {
    /// A closed breaker for `upstream` (the host name, used in the metric label and log
    /// lines), with its metrics registered on `registry`.
    pub fn new(config: &BreakerConfig, upstream: &str, registry: &mut Registry) -> Self {
        let settings = Settings::from_config(config);
        let core = Core {
            phase: Phase::Closed,
            generation: 0,
            consecutive: 0,
            window: Window::new(settings.window, Instant::now()),
        };
        Self {
            shared: Arc::new(Shared {
                metrics: BreakerMetrics::register(registry, upstream),
                settings: ArcSwap::from_pointee(settings),
                upstream: upstream.into(),
                core: Mutex::new(core),
            }),
        }
    }

    /// Applies a reloaded `[breaker]`. The state carries over (an open breaker stays open
    /// until its current `open_for` ends); a new `window` length starts an empty window,
    /// since failures counted over the old length say nothing about the new ratio.
    pub fn reconfigure(&self, config: &BreakerConfig) {
        let settings = Settings::from_config(config);
        let mut core = self.lock();
        if settings.window != self.shared.settings.load().window {
            core.window = Window::new(settings.window, Instant::now());
        }
        self.shared.settings.store(Arc::new(settings));
    }

    /// Where the breaker stands now. An open breaker whose `open_for` has run out is
    /// moved to half-open here, so readiness checks never see a stale "open".
    pub fn state(&self) -> State {
        let (state, change) = {
            let mut core = self.lock();
            let change = match core.phase {
                Phase::Open { until, .. } if Instant::now() >= until => Some(self.enter(
                    &mut core,
                    Phase::HalfOpen {
                        in_flight: 0,
                        successes: 0,
                    },
                )),
                _ => None,
            };
            (core.phase.state(), change)
        };
        if let Some(change) = change {
            self.report(change);
        }
        state
    }

    /// Lets a request through, or says why not. `Ok(None)` when the breaker is disabled.
    fn admit(&self) -> Result<Option<Ticket>, SidecarError> {
        let settings = self.shared.settings.load();
        if !settings.enabled {
            return Ok(None);
        }
        let now = Instant::now();
        let mut change = None;
        let admitted = {
            let mut core = self.lock();
            let role = match &mut core.phase {
                Phase::Closed => Ok(Role::Counted),
                Phase::Open { until, trip } if now < *until => {
                    Err(Refusal::Open(*trip, *until - now))
                }
                Phase::Open { .. } => {
                    change = Some(self.enter(
                        &mut core,
                        Phase::HalfOpen {
                            in_flight: 1,
                            successes: 0,
                        },
                    ));
                    Ok(Role::Probe)
                }
                Phase::HalfOpen { in_flight, .. } if *in_flight < settings.half_open_probes => {
                    *in_flight += 1;
                    Ok(Role::Probe)
                }
                Phase::HalfOpen { in_flight, .. } => Err(Refusal::ProbesBusy(*in_flight)),
            };
            role.map(|role| Ticket {
                breaker: self.clone(),
                generation: core.generation,
                role,
                settled: false,
            })
        };
        if let Some(change) = change {
            self.report(change);
        }
        // The error's detail is formatted outside the lock.
        admitted
            .map(Some)
            .map_err(|refusal| self.refusal_error(refusal))
    }

    /// Records how a request admitted in `generation` as `role` ended.
    fn settle(&self, generation: u64, role: Role, outcome: Outcome) {
        if role == Role::Counted && outcome == Outcome::Neutral {
            return;
        }
        let settings = self.shared.settings.load();
        let now = Instant::now();
        let change = {
            let mut core = self.lock();
            if core.generation != generation {
                return;
            }
            match (role, core.phase) {
                (Role::Counted, Phase::Closed) => {
                    let failed = outcome == Outcome::Failure;
                    core.consecutive = if failed {
                        core.consecutive.saturating_add(1)
                    } else {
                        0
                    };
                    core.window.record(now, failed);
                    settings.trip(&core, now).map(|trip| {
                        self.enter(
                            &mut core,
                            Phase::Open {
                                until: now + settings.open_for,
                                trip,
                            },
                        )
                    })
                }
                (
                    Role::Probe,
                    Phase::HalfOpen {
                        in_flight,
                        successes,
                    },
                ) => match outcome {
                    Outcome::Failure => Some(self.enter(
                        &mut core,
                        Phase::Open {
                            until: now + settings.open_for,
                            trip: Trip::Probe,
                        },
                    )),
                    Outcome::Success
                        if successes.saturating_add(1) >= settings.half_open_probes =>
                    {
                        Some(self.enter(&mut core, Phase::Closed))
                    }
                    Outcome::Success | Outcome::Neutral => {
                        core.phase = Phase::HalfOpen {
                            in_flight: in_flight.saturating_sub(1),
                            successes: successes + u32::from(outcome == Outcome::Success),
                        };
                        None
                    }
                },
                // Unreachable: a matching generation means the phase is still the one the
                // ticket was issued in.
                _ => None,
            }
        };
        if let Some(change) = change {
            self.report(change);
        }
    }

    /// Moves to `phase` with fresh counters and updates the metrics. Called under the lock;
    /// the returned change is reported after it is released.
    fn enter(&self, core: &mut Core, phase: Phase) -> Change {
        core.phase = phase;
        core.generation = core.generation.wrapping_add(1);
        core.consecutive = 0;
        core.window.reset();
        let metrics = &self.shared.metrics;
        metrics.state.set(phase.state().gauge_value());
        match phase {
            Phase::Open { trip, .. } => {
                metrics.to_open.inc();
                Change::Opened(trip)
            }
            Phase::HalfOpen { .. } => {
                metrics.to_half_open.inc();
                Change::HalfOpened
            }
            Phase::Closed => {
                metrics.to_closed.inc();
                Change::Closed
            }
        }
    }

    /// Logs a state change: opening is what an operator is paged about, so it is a
    /// warning that says why, with numbers.
    fn report(&self, change: Change) {
        let upstream = &*self.shared.upstream;
        let settings = self.shared.settings.load();
        let open_for_secs = settings.open_for.as_secs_f64();
        match change {
            Change::Opened(Trip::Consecutive { failures }) => tracing::warn!(
                upstream,
                reason = "consecutive",
                failures,
                threshold = settings.consecutive_failures,
                open_for_secs,
                "circuit breaker opened: FinCode failed too many requests in a row"
            ),
            Change::Opened(Trip::Ratio { failures, requests }) => tracing::warn!(
                upstream,
                reason = "ratio",
                failures,
                requests,
                failure_ratio = settings.failure_ratio,
                window_secs = settings.window.as_secs_f64(),
                open_for_secs,
                "circuit breaker opened: too many FinCode requests failed in the window"
            ),
            Change::Opened(Trip::Probe) => tracing::warn!(
                upstream,
                reason = "probe",
                open_for_secs,
                "circuit breaker opened again: a probe request to FinCode failed"
            ),
            Change::HalfOpened => tracing::info!(
                upstream,
                probes = settings.half_open_probes,
                "circuit breaker half-open: letting probe requests through to FinCode"
            ),
            Change::Closed => tracing::info!(
                upstream,
                "circuit breaker closed: FinCode answered the probes"
            ),
        }
    }

    /// The 503 the app receives, saying why and for how long.
    fn refusal_error(&self, refusal: Refusal) -> SidecarError {
        let upstream = &*self.shared.upstream;
        match refusal {
            Refusal::Open(trip, remaining) => {
                let why = match trip {
                    Trip::Consecutive { failures } => {
                        format!("failed {failures} requests in a row")
                    }
                    Trip::Ratio { failures, requests } => format!(
                        "failed {failures} of {requests} requests within {}s (breaker.failure_ratio)",
                        whole_seconds(self.shared.settings.load().window)
                    ),
                    Trip::Probe => "failed a probe request after the breaker had opened".into(),
                };
                SidecarError::new(
                    ErrorKind::CircuitOpen,
                    format!(
                        "FinCode ({upstream}) {why}; the sidecar fails fast for another {}s, \
                         then lets probes through (breaker.open_for)",
                        whole_seconds(remaining)
                    ),
                )
                .with_retry_after(remaining)
            }
            Refusal::ProbesBusy(in_flight) => SidecarError::new(
                ErrorKind::CircuitOpen,
                format!(
                    "FinCode ({upstream}) is being probed after repeated failures and all \
                     {in_flight} probe slots are in use (breaker.half_open_probes); retry shortly"
                ),
            )
            .with_retry_after(PROBES_BUSY_RETRY_AFTER),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Core> {
        // Every update leaves the state consistent before anything that could panic, so a
        // poisoned lock still holds usable state.
        self.shared
            .core
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

// === impl State ===

impl State {
    /// The `fincode_circuit_breaker_state` value. Alert rules depend on these numbers.
    const fn gauge_value(self) -> i64 {
        match self {
            Self::Closed => 0,
            Self::HalfOpen => 1,
            Self::Open => 2,
        }
    }
}

// === impl Phase ===

impl Phase {
    const fn state(self) -> State {
        match self {
            Self::Closed => State::Closed,
            Self::Open { .. } => State::Open,
            Self::HalfOpen { .. } => State::HalfOpen,
        }
    }
}

// === impl Settings ===

impl Settings {
    fn from_config(config: &BreakerConfig) -> Self {
        Self {
            enabled: config.enabled,
            consecutive_failures: config.consecutive_failures.max(1),
            failure_ratio: config.failure_ratio,
            min_requests: config.min_requests.max(1),
            window: config.window,
            open_for: config.open_for.min(LONGEST_OPEN_FOR),
            half_open_probes: config.half_open_probes.max(1),
        }
    }

    /// Whether the closed breaker's counters call for opening it now.
    fn trip(&self, core: &Core, now: Instant) -> Option<Trip> {
        if core.consecutive >= self.consecutive_failures {
            return Some(Trip::Consecutive {
                failures: core.consecutive,
            });
        }
        let (requests, failures) = core.window.totals(now);
        // `failures > 0` keeps a ratio of 0 from opening a breaker that saw no failure;
        // a NaN ratio compares false and never opens it.
        let tripped = requests >= self.min_requests
            && failures > 0
            && f64::from(failures) >= self.failure_ratio * f64::from(requests);
        tripped.then_some(Trip::Ratio { failures, requests })
    }
}

// === impl Ticket ===

impl Ticket {
    fn settle(mut self, outcome: Outcome) {
        self.settled = true;
        self.breaker.settle(self.generation, self.role, outcome);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.settled {
            self.breaker
                .settle(self.generation, self.role, Outcome::Neutral);
        }
    }
}

// === impl Outcome ===

impl Outcome {
    fn of<RB>(result: &Result<Response<RB>, SidecarError>) -> Self {
        match result {
            Ok(response) => match response.status() {
                StatusCode::INTERNAL_SERVER_ERROR
                | StatusCode::BAD_GATEWAY
                | StatusCode::SERVICE_UNAVAILABLE
                | StatusCode::GATEWAY_TIMEOUT => Self::Failure,
                _ => Self::Success,
            },
            Err(error) => match error.kind() {
                ErrorKind::UpstreamUnreachable
                | ErrorKind::UpstreamTimeout
                | ErrorKind::UpstreamTls => Self::Failure,
                _ => Self::Neutral,
            },
        }
    }
}

// === impl Window ===

impl Window {
    fn new(window: Duration, origin: Instant) -> Self {
        Self {
            origin,
            // At least 1ns so the division below is defined; a zero window then holds
            // (almost) nothing and the ratio check stays quiet.
            slice_nanos: (window.as_nanos() / SLICES as u128).max(1),
            slices: [Slice::default(); SLICES],
        }
    }

    fn index(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.origin).as_nanos();
        u64::try_from(elapsed / self.slice_nanos).unwrap_or(u64::MAX)
    }

    fn record(&mut self, now: Instant, failed: bool) {
        let index = self.index(now);
        let slice = &mut self.slices[(index % SLICES as u64) as usize];
        if slice.index != index {
            *slice = Slice {
                index,
                ..Slice::default()
            };
        }
        slice.requests = slice.requests.saturating_add(1);
        slice.failures = slice.failures.saturating_add(u32::from(failed));
    }

    /// `(requests, failures)` over the slices still inside the window.
    fn totals(&self, now: Instant) -> (u32, u32) {
        let current = self.index(now);
        self.slices
            .iter()
            .filter(|slice| current - slice.index.min(current) < SLICES as u64)
            .fold((0u32, 0u32), |(requests, failures), slice| {
                (
                    requests.saturating_add(slice.requests),
                    failures.saturating_add(slice.failures),
                )
            })
    }

    fn reset(&mut self) {
        self.slices = [Slice::default(); SLICES];
    }
}

// === impl BreakerMetrics ===

impl BreakerMetrics {
    fn register(registry: &mut Registry, upstream: &str) -> Self {
        let state = Family::<UpstreamLabels, Gauge>::default();
        let transitions = Family::<TransitionLabels, Counter>::default();
        registry.register(
            "fincode_circuit_breaker_state",
            "Circuit breaker state for the upstream: 0 closed, 1 half-open, 2 open",
            state.clone(),
        );
        // prometheus-client appends `_total` to counters.
        registry.register(
            "fincode_circuit_breaker_transitions",
            "Circuit breaker state changes, by the state entered",
            transitions.clone(),
        );
        // Every series exists from the start (the gauge at closed, the counters at 0), so
        // `increase()` in an alert sees the first opening.
        let transition = |to| {
            transitions.get_or_create_owned(&TransitionLabels {
                upstream: upstream.to_owned(),
                to,
            })
        };
        let this = Self {
            state: state.get_or_create_owned(&UpstreamLabels {
                upstream: upstream.to_owned(),
            }),
            to_open: transition("open"),
            to_half_open: transition("half_open"),
            to_closed: transition("closed"),
        };
        this.state.set(State::Closed.gauge_value());
        this
    }
}

// === impl BreakerLayer ===

impl BreakerLayer {
    /// Guards the inner service with `breaker`; clones of it share its state.
    pub fn new(breaker: Breaker) -> Self {
        Self { breaker }
    }
}

impl<S> Layer<S> for BreakerLayer {
    type Service = CircuitBreaker<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker {
            inner,
            breaker: self.breaker.clone(),
        }
    }
}

// === impl CircuitBreaker ===

impl<S, B, RB> Service<Request<B>> for CircuitBreaker<S>
where
    S: Service<Request<B>, Response = Response<RB>, Error = SidecarError>,
{
    type Response = Response<RB>;
    type Error = SidecarError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Admission is decided per request in `call`, where the refusal can be answered;
        // readiness is the inner service's.
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let kind = match self.breaker.admit() {
            Ok(ticket) => Kind::Admitted {
                future: self.inner.call(req),
                ticket,
            },
            Err(error) => Kind::Refused { error: Some(error) },
        };
        ResponseFuture { kind }
    }
}

// === impl ResponseFuture ===

impl<F, RB> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<RB>, SidecarError>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Refused { error } => Poll::Ready(Err(error.take().unwrap_or_else(|| {
                // Polling a finished future is the caller's bug; answer it without a panic.
                SidecarError::new(
                    ErrorKind::CircuitOpen,
                    "circuit breaker response polled after it completed",
                )
            }))),
            KindProj::Admitted { future, ticket } => {
                let result = std::task::ready!(future.poll(cx));
                if let Some(ticket) = ticket.take() {
                    ticket.settle(Outcome::of(&result));
                }
                Poll::Ready(result)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http::header::RETRY_AFTER;
    use prometheus_client::encoding::text::encode;
    use tower::{ServiceExt, service_fn, util::BoxCloneService};

    use super::*;

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
        assert_eq!(
            h.breaker.state(),
            State::Closed,
            "9 of 9 failed, but 9 < min_requests"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn opens_on_failure_ratio_over_window() {
        let mut h = harness(&ratio_only());
        for _ in 0..4 {
            h.send_all(&[OK, FAIL]).await;
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        h.send_all(&[OK, OK]).await;
        assert_eq!(h.breaker.state(), State::Closed, "4 of 10 failed");
        h.send_all(&[FAIL]).await;
        assert_eq!(h.breaker.state(), State::Closed, "5 of 11 failed");
        h.send_all(&[FAIL]).await;
        assert_eq!(h.breaker.state(), State::Open, "6 of 12 failed");
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
        assert_eq!(
            h.breaker.state(),
            State::Closed,
            "the first 9 left the window"
        );
        tokio::time::advance(Duration::from_secs(5)).await;
        h.send_all(&[FAIL]).await;
        assert_eq!(h.breaker.state(), State::Open, "10 of 10 failed within 10s");
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
        assert_eq!(
            h.breaker.state(),
            State::HalfOpen,
            "a hang-up is neither success nor failure"
        );
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
        assert_eq!(
            h.breaker.state(),
            State::Closed,
            "4xx and 3xx reset the count"
        );
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
        assert_eq!(
            h.breaker.state(),
            State::Closed,
            "neutral errors are not failures"
        );
        h.send(Reply::Status(500)).await.unwrap();
        assert_eq!(
            h.breaker.state(),
            State::Open,
            "nor do they reset the count"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn stale_outcome_from_before_the_trip_is_ignored() {
        let mut h = harness(&config());
        let slow_failure = h.start(FAIL).await;
        h.trip().await;
        tokio::time::advance(Duration::from_secs(15)).await;
        let probe = h.start(OK).await;
        slow_failure.await.unwrap();
        assert_eq!(
            h.breaker.state(),
            State::HalfOpen,
            "a closed-era failure is not a probe"
        );
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
}
