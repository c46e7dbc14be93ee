//! Retries: a failed try to FinCode is tried again when that is safe and worth it.
//!
//! What fails a try: no connection, a connection lost before the response, no response
//! head within `retry.per_try_timeout`, or FinCode answering 429, 502, 503 or 504.
//!
//! When it is safe, above all else: a payment is never sent twice. A try that failed
//! before any byte left (connect or TLS failure) may be sent again whatever the method.
//! Once FinCode may have seen the request, only idempotent methods and POST/PATCH with an
//! `X-Idempotency-Key` (which FinCode deduplicates on) are sent again; a blank key, or
//! several different keys, count as none (`IdempotencyKey` in `authorize`). With
//! `retry.mint_idempotency_key` the sidecar gives a POST/PATCH without a key (or with a
//! blank one) a fresh key and echoes it to the app. A body larger than
//! `retry.max_replay_body` is streamed, not kept, and so never retried.
//!
//! When it is worth it: at most `retry.max_attempts` tries; a full-jitter backoff between
//! them ([`fincode_backoff`]); FinCode's `Retry-After` honoured up to `retry.retry_after_cap`;
//! never past `retry.deadline`; and a retry budget (tower's [`TpsBudget`]: retries at
//! most `budget_ratio` of recent requests plus `budget_min_per_second`), so an outage
//! does not turn every app request into `max_attempts` requests to FinCode.
//!
//! The app sees the last try's answer, `x-sidecar-attempts` (set by the error responder
//! from the shared [`Tries`](crate::observe::Tries) count), and when retrying stopped
//! early, `x-sidecar-retry-stopped` saying why.

use std::{
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, SystemTime},
};

use arc_swap::ArcSwap;
use bytes::Bytes;
use fincode_backoff::{Backoff, retry_after};
use fincode_config::RetryConfig;
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Either, Full, LengthLimitError};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};
use tokio::time::Instant;
use tower::{
    Layer, Service, ServiceExt,
    retry::budget::{Budget, TpsBudget},
};

use crate::{
    ErrorKind, SidecarError,
    authorize::{IDEMPOTENCY_KEY, IdempotencyKey, Renewed, may_send_twice},
    head::request_from_head,
    observe::Counted,
    rate_limit::Throttle,
    svc::{BoxResponseFuture, ReplayStack, take_ready},
    upstream::humanize,
};

/// Says why the sidecar stopped retrying a request whose last try failed.
pub const RETRY_STOPPED_HEADER: &str = "x-sidecar-retry-stopped";

/// Why a try failed, as the `reason` label of `fincode_retries_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reason {
    Connect,
    Reset,
    Timeout,
    Status(u16),
}

impl Reason {
    const ALL: [&'static str; 7] = [
        "connect",
        "reset",
        "timeout",
        "status_429",
        "status_502",
        "status_503",
        "status_504",
    ];

    fn label(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Reset => "reset",
            Self::Timeout => "timeout",
            Self::Status(429) => "status_429",
            Self::Status(502) => "status_502",
            Self::Status(503) => "status_503",
            Self::Status(_) => "status_504",
        }
    }
}

/// Why retrying stopped while the last try had failed (`x-sidecar-retry-stopped`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    /// FinCode may have seen a request that is not safe to send twice.
    NotIdempotent,
    /// The body was streamed (over `retry.max_replay_body`), so there is nothing to resend.
    BodyTooLarge,
    MaxAttempts,
    RetryAfterTooLong,
    Deadline,
    Budget,
}

impl Stop {
    fn code(self) -> &'static str {
        match self {
            Self::NotIdempotent => "not_idempotent",
            Self::BodyTooLarge => "body_too_large",
            Self::MaxAttempts => "max_attempts",
            Self::RetryAfterTooLong => "retry_after_too_long",
            Self::Deadline => "deadline",
            Self::Budget => "budget",
        }
    }

    fn explain(self) -> &'static str {
        match self {
            Self::NotIdempotent => {
                "not retried: FinCode may have received it and it carries no usable \
                 X-Idempotency-Key (one non-blank key of visible ASCII)"
            }
            Self::BodyTooLarge => "not retried: the body is over retry.max_replay_body",
            Self::MaxAttempts => "retry.max_attempts reached",
            Self::RetryAfterTooLong => "FinCode's Retry-After is over retry.retry_after_cap",
            Self::Deadline => "another try would pass retry.deadline",
            Self::Budget => {
                "the retry budget is spent (FinCode is failing many requests); not retried"
            }
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// Retry metrics.
#[derive(Clone, Debug)]
struct Metrics {
    retries: Family<ReasonLabel, Counter>,
    budget_exhausted: Counter,
}

impl Metrics {
    fn register(registry: &mut Registry) -> Self {
        let this = Self {
            retries: Family::default(),
            budget_exhausted: Counter::default(),
        };
        registry.register(
            "fincode_retries",
            "Tries to FinCode sent again, by why the previous one failed",
            this.retries.clone(),
        );
        registry.register(
            "fincode_retry_budget_exhausted",
            "Retries skipped because the retry budget was spent",
            this.budget_exhausted.clone(),
        );
        for reason in Reason::ALL {
            let _ = this.retries.get_or_create(&ReasonLabel { reason });
        }
        this
    }
}

/// The retry policy, built once from `[retry]`.
struct Policy {
    max_attempts: u32,
    backoff: Backoff,
    per_try_timeout: Duration,
    /// `upstream.request_timeout`: it bounds each try too (the upstream client keeps no
    /// timer of its own, so a try costs one timer, not two). Fixed at start, as that key
    /// needs a restart.
    request_timeout: Duration,
    deadline: Duration,
    retry_after_cap: Duration,
    budget: TpsBudget,
    max_replay_body: u64,
    mint_idempotency_key: bool,
    throttle: Throttle,
    upstream_backoff: Duration,
    metrics: Metrics,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("max_attempts", &self.max_attempts)
            .field("backoff", &self.backoff)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

/// Adds [`Retry`] to a stack.
///
/// The policy sits behind an [`ArcSwap`] so a config reload can replace it whole
/// ([`Self::rebuild`], then [`Self::install`]); a request takes the policy in force when
/// it reaches the layer and keeps it for all its tries.
#[derive(Clone, Debug)]
pub struct RetryLayer {
    policy: Arc<ArcSwap<Policy>>,
}

/// Sends failed tries again when safe, within attempts, deadline and budget.
#[derive(Clone, Debug)]
pub struct Retry<S> {
    inner: S,
    policy: Arc<ArcSwap<Policy>>,
}

/// A policy built from a new `[retry]` and not yet in use: see [`RetryLayer::rebuild`].
#[derive(Debug)]
pub struct PendingPolicy(Arc<Policy>);

// === impl RetryLayer ===

impl RetryLayer {
    /// The policy from `config`. FinCode's 429s are reported to `throttle` (with
    /// `upstream_backoff` when they carry no `Retry-After`), so the rate limiter holds
    /// that route for everyone. Each try is bounded by `retry.per_try_timeout` and
    /// `request_timeout` (`upstream.request_timeout`), whichever is shorter.
    pub fn new(
        config: &RetryConfig,
        request_timeout: Duration,
        throttle: Throttle,
        upstream_backoff: Duration,
        registry: &mut Registry,
    ) -> Self {
        let policy = Policy::build(
            config,
            request_timeout,
            throttle,
            upstream_backoff,
            Metrics::register(registry),
        );
        Self {
            policy: Arc::new(ArcSwap::from_pointee(policy)),
        }
    }

    /// Builds the policy a reloaded `config` asks for, keeping the throttle shared with
    /// the rate limiter and the metrics; nothing changes until [`Self::install`]. The
    /// retry budget starts afresh.
    pub fn rebuild(&self, config: &RetryConfig, upstream_backoff: Duration) -> PendingPolicy {
        let current = self.policy.load();
        PendingPolicy(Arc::new(Policy::build(
            config,
            current.request_timeout,
            current.throttle.clone(),
            upstream_backoff,
            current.metrics.clone(),
        )))
    }

    /// Puts a rebuilt policy in use for every request that reaches the layer from now on.
    pub fn install(&self, pending: PendingPolicy) {
        self.policy.store(pending.0);
    }
}

// === impl Policy ===

impl Policy {
    fn build(
        config: &RetryConfig,
        request_timeout: Duration,
        throttle: Throttle,
        upstream_backoff: Duration,
        metrics: Metrics,
    ) -> Self {
        // tower's budget wants a window of 1 to 60 seconds; the config allows that range.
        let window = config
            .budget_window
            .clamp(Duration::from_secs(1), Duration::from_mins(1));
        #[allow(clippy::cast_possible_truncation)] // A ratio in 0..=1.
        let ratio = config.budget_ratio.clamp(0.0, 1.0) as f32;
        Self {
            max_attempts: config.max_attempts.max(1),
            backoff: Backoff::full_jitter(config.backoff_base, config.backoff_cap),
            per_try_timeout: config.per_try_timeout,
            request_timeout,
            deadline: config.deadline,
            retry_after_cap: config.retry_after_cap,
            budget: TpsBudget::new(window, config.budget_min_per_second, ratio),
            max_replay_body: config.max_replay_body,
            mint_idempotency_key: config.mint_idempotency_key,
            throttle,
            upstream_backoff,
            metrics,
        }
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = Retry<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry {
            inner,
            policy: self.policy.clone(),
        }
    }
}

// === impl Retry ===

impl<S, B, RB> Service<Request<B>> for Retry<S>
where
    S: ReplayStack<B, Response = Response<RB>>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    RB: Send + 'static,
{
    type Response = Response<RB>;
    type Error = SidecarError;
    type Future = BoxResponseFuture<RB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        Box::pin(
            self.policy
                .load_full()
                .run(take_ready(&mut self.inner), req),
        )
    }
}

/// A failed try: why, whether FinCode may have seen it, and FinCode's `Retry-After`.
struct Failure {
    reason: Reason,
    sent: bool,
    retry_after: Option<Duration>,
}

impl Policy {
    /// How long the next try may take, and the settings that say so (for the error):
    /// `retry.per_try_timeout` or `upstream.request_timeout`, whichever is shorter, and
    /// never past the call's `deadline`.
    fn try_bound(&self, deadline: Instant, now: Instant) -> (Duration, &'static str) {
        let left = deadline.saturating_duration_since(now);
        let (limit, key) = if self.request_timeout < self.per_try_timeout {
            (self.request_timeout, "upstream.request_timeout")
        } else {
            (self.per_try_timeout, "retry.per_try_timeout")
        };
        if left < limit {
            (left, "retry.deadline")
        } else {
            (limit, key)
        }
    }

    async fn run<S, B, RB>(
        self: Arc<Self>,
        mut inner: S,
        req: Request<B>,
    ) -> Result<Response<RB>, SidecarError>
    where
        S: Service<Request<Either<Full<Bytes>, B>>, Response = Response<RB>, Error = SidecarError>,
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let deadline = Instant::now() + self.deadline;
        // The head each try is built from (`request_from_head`).
        let (mut head, body) = req.into_parts();
        let minted = self.mint_key(&mut head);
        let route = Counted::route_of(&head.extensions);
        let resendable = may_send_twice(&head.method, &head.headers);

        // The app's body arrives under the deadline too: a trickling app cannot hold a
        // request (and its place under the concurrency limit) past retry.deadline, and
        // nothing is sent to FinCode until the whole body is in. Its own kind (408
        // body_timeout), not upstream_timeout: the breaker and the FinCode alerts must
        // not blame FinCode for an app's slow upload.
        let kept = if body.is_end_stream() {
            // Nothing more can arrive (a GET): no timer to set and clear.
            keep(body, self.max_replay_body).await?
        } else {
            tokio::time::timeout_at(deadline, keep(body, self.max_replay_body))
                .await
                .map_err(|_elapsed| {
                    SidecarError::new(
                        ErrorKind::RequestBodyTimeout,
                        format!(
                            "the app did not finish sending the request body within {} \
                         (retry.deadline); nothing was sent to FinCode",
                            humanize(self.deadline)
                        ),
                    )
                    .unsent()
                })??
        };
        let (bytes, mut stream) = match kept {
            Kept::Bytes(bytes) => (Some(bytes), None),
            Kept::Stream(body) => (None, Some(body)),
        };
        self.budget.deposit();

        let mut attempt = 1;
        // Whether this attempt already sent its try again after a renewed token.
        let mut renewed_once = false;
        loop {
            let request = match (&bytes, stream.take()) {
                (Some(bytes), _) => {
                    request_from_head(&head, Either::Left(Full::new(bytes.clone())))
                }
                (None, Some(body)) => request_from_head(&head, Either::Right(body)),
                // Unreachable: a streamed body is never tried twice (see `decide`).
                (None, None) => {
                    break Err(SidecarError::new(
                        ErrorKind::BadRequest,
                        "the request body was already sent",
                    ));
                }
            };
            // One clock read for both the bound and its timer.
            let now = Instant::now();
            let (per_try, keys) = self.try_bound(deadline, now);
            let result = match tokio::time::timeout_at(now + per_try, async {
                inner.ready().await?.call(request).await
            })
            .await
            {
                Ok(result) => result,
                Err(_elapsed) => Err(SidecarError::new(
                    ErrorKind::UpstreamTimeout,
                    format!(
                        "FinCode sent no response within {} ({keys})",
                        humanize(per_try)
                    ),
                )),
            };
            // FinCode rejected the token, the authorize layer renewed it, and the
            // request is safe to send twice: the same try once more, now carrying the
            // new token. Not a retry (no backoff, no budget, the same attempt), and once
            // per attempt, so a token FinCode keeps refusing cannot loop; never started at
            // or past the call's deadline, as no retry is.
            if let Ok(response) = &result
                && response.extensions().get::<Renewed>().is_some()
                && !renewed_once
                && resendable
                && bytes.is_some()
                && Instant::now() < deadline
            {
                renewed_once = true;
                continue;
            }
            let Some(failure) = classify(&result) else {
                break finish(result, None, minted.as_ref());
            };
            if failure.reason == Reason::Status(429) {
                self.throttle
                    .pause(route, failure.retry_after.unwrap_or(self.upstream_backoff));
            }
            match self.decide(&failure, attempt, resendable, bytes.is_some(), deadline) {
                Err(stop) => break finish(result, Some(stop), minted.as_ref()),
                Ok(delay) => {
                    self.metrics
                        .retries
                        .get_or_create(&ReasonLabel {
                            reason: failure.reason.label(),
                        })
                        .inc();
                    tracing::debug!(
                        attempt,
                        reason = failure.reason.label(),
                        delay_ms = delay.as_millis(),
                        "retrying"
                    );
                    drop(result);
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                    renewed_once = false;
                }
            }
        }
    }

    /// With `retry.mint_idempotency_key`, a POST/PATCH without a key, or with only a blank
    /// one, gets a fresh key (replacing the blank values). Keys the app did choose, even
    /// unusable ones, are never replaced: the app's own retries carry them, and a key
    /// minted per call would make each of those a new payment.
    fn mint_key(&self, head: &mut http::request::Parts) -> Option<HeaderValue> {
        if !self.mint_idempotency_key
            || !matches!(head.method, Method::POST | Method::PATCH)
            || !matches!(
                IdempotencyKey::of(&head.headers),
                IdempotencyKey::Absent | IdempotencyKey::Blank
            )
        {
            return None;
        }
        let key = HeaderValue::from_str(&uuid::Uuid::now_v7().to_string()).ok()?;
        head.headers
            .insert(HeaderName::from_static(IDEMPOTENCY_KEY), key.clone());
        Some(key)
    }

    /// The wait before the next try, or why there is none.
    fn decide(
        &self,
        failure: &Failure,
        attempt: u32,
        resendable: bool,
        kept: bool,
        deadline: Instant,
    ) -> Result<Duration, Stop> {
        if failure.sent && !resendable {
            return Err(Stop::NotIdempotent);
        }
        if !kept {
            return Err(Stop::BodyTooLarge);
        }
        if attempt >= self.max_attempts {
            return Err(Stop::MaxAttempts);
        }
        let mut delay = self.backoff.delay(attempt - 1);
        if let Some(after) = failure.retry_after {
            if after > self.retry_after_cap {
                return Err(Stop::RetryAfterTooLong);
            }
            delay = delay.max(after);
        }
        if Instant::now() + delay >= deadline {
            return Err(Stop::Deadline);
        }
        if !self.budget.withdraw() {
            self.metrics.budget_exhausted.inc();
            return Err(Stop::Budget);
        }
        Ok(delay)
    }
}

/// Whether a try failed in a way a retry can fix; `None` for a final answer.
fn classify<RB>(result: &Result<Response<RB>, SidecarError>) -> Option<Failure> {
    match result {
        Ok(response) => {
            let status = response.status();
            matches!(
                status,
                StatusCode::TOO_MANY_REQUESTS
                    | StatusCode::BAD_GATEWAY
                    | StatusCode::SERVICE_UNAVAILABLE
                    | StatusCode::GATEWAY_TIMEOUT
            )
            .then(|| Failure {
                reason: Reason::Status(status.as_u16()),
                sent: true,
                retry_after: retry_after::parse(response.headers(), SystemTime::now()),
            })
        }
        Err(error) => {
            let sent = error.may_have_been_sent();
            let reason = match error.kind() {
                ErrorKind::UpstreamUnreachable if sent => Reason::Reset,
                ErrorKind::UpstreamUnreachable | ErrorKind::UpstreamTimeout if !sent => {
                    Reason::Connect
                }
                ErrorKind::UpstreamTimeout => Reason::Timeout,
                _ => return None,
            };
            Some(Failure {
                reason,
                sent,
                retry_after: None,
            })
        }
    }
}

/// The last try's result, marked with why retrying stopped and the minted key.
fn finish<RB>(
    result: Result<Response<RB>, SidecarError>,
    stop: Option<Stop>,
    minted: Option<&HeaderValue>,
) -> Result<Response<RB>, SidecarError> {
    let stopped = HeaderName::from_static(RETRY_STOPPED_HEADER);
    let key = HeaderName::from_static(IDEMPOTENCY_KEY);
    match result {
        Ok(mut response) => {
            if let Some(stop) = stop {
                response
                    .headers_mut()
                    .insert(stopped, HeaderValue::from_static(stop.code()));
            }
            if let Some(minted) = minted {
                response.headers_mut().insert(key, minted.clone());
            }
            Ok(response)
        }
        Err(mut error) => {
            if let Some(stop) = stop {
                error = error
                    .with_note(stop.explain())
                    .with_header(stopped, HeaderValue::from_static(stop.code()));
            }
            if let Some(minted) = minted {
                error = error.with_header(key, minted.clone());
            }
            Err(error)
        }
    }
}

enum Kept<B> {
    Bytes(Bytes),
    Stream(B),
}

/// Keeps a body whose declared size fits `max` so it can be sent again; streams any
/// other (chunked bodies declare no size and are streamed).
async fn keep<B>(body: B, max: u64) -> Result<Kept<B>, SidecarError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if body.size_hint().upper().is_none_or(|upper| upper > max) {
        return Ok(Kept::Stream(body));
    }
    match body.collect().await {
        Ok(collected) => Ok(Kept::Bytes(collected.to_bytes())),
        Err(error) => {
            let error = error.into();
            if error.downcast_ref::<LengthLimitError>().is_some() {
                return Err(SidecarError::new(
                    ErrorKind::BodyTooLarge,
                    "the request body is over the limit (limits.max_request_body_bytes)",
                ));
            }
            Err(SidecarError::new(
                ErrorKind::BadRequest,
                "the request body could not be read from the app's connection",
            ))
        }
    }
}

#[cfg(test)]
mod tests;
