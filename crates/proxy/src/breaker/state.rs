//! The breaker's state machine: admission, outcomes, transitions and what they log.

use std::{
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use arc_swap::ArcSwap;
use fincode_config::BreakerConfig;
use http::{Response, StatusCode};
use prometheus_client::registry::Registry;
use tokio::time::Instant;

use super::{metrics::BreakerMetrics, window::Window};
use crate::{ErrorKind, SidecarError, error::whole_seconds};

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
pub(super) enum Outcome {
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
pub(super) struct Ticket {
    breaker: Breaker,
    generation: u64,
    role: Role,
    settled: bool,
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
    pub(super) fn ticket(&self) -> Result<Option<Ticket>, SidecarError> {
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
    pub(super) const fn gauge_value(self) -> i64 {
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
    pub(super) fn settle(mut self, outcome: Outcome) {
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
    pub(super) fn of<RB>(result: &Result<Response<RB>, SidecarError>) -> Self {
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
