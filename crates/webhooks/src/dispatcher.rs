//! The dispatcher: delivers committed events to the app, asynchronously, until the app
//! acknowledges them or they become dead letters. Never loses one.
//!
//! Events are leased from the store ([`EventStore::claim_due`]), so a crash mid-delivery
//! only means the lease runs out and the event is delivered again: delivery is at least
//! once, and the app deduplicates on `webhook-id`, which is stable across attempts. Each
//! failed attempt is rescheduled with full-jitter exponential backoff (or the app's
//! `Retry-After`, up to the backoff cap); after `webhooks.max_attempts` attempts or
//! `webhooks.max_age`, the event is dead and waits for an operator's replay.
//!
//! Time comes from a [`Clock`]: in production the wall clock, the same one the listener
//! stamps `received_at` with (and the one other replicas sharing a store read); in tests
//! one that follows tokio's clock, so the schedule can be tested with paused time.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    time::{Duration, SystemTime},
};

use fincode_backoff::Backoff;
use fincode_store::{Claimed, EventStore, Lease, StoredEvent};
use tokio::sync::{Notify, Semaphore};

use fincode_audit::Auditor;

use crate::{audit::Audit, metrics::WebhookMetrics};

/// How often the store is asked for due events when nothing wakes the dispatcher.
const POLL: Duration = Duration::from_secs(1);

/// How often the queue-depth gauge is refreshed (a count over the store).
const DEPTH_EVERY: Duration = Duration::from_secs(1);

/// How often delivered events past `webhooks.retention` are deleted.
const PURGE_EVERY: Duration = Duration::from_hours(1);

/// How long a superseded event waits before it is confirmed again: FinCode's later status
/// is not going back, but its view may have lagged the event's.
pub const SUPERSEDED_RETRY: Duration = Duration::from_mins(30);

/// Runs `task` at once and then every `period`, for ever (until aborted). A run that
/// overruns delays the next instead of bunching them up.
async fn every<T, F, Fut>(period: Duration, state: Arc<T>, task: F)
where
    F: Fn(Arc<T>) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        task(state.clone()).await;
    }
}

/// A boxed future, as trait objects return them.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The result of one delivery attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// The app answered 2xx.
    Delivered {
        /// The app's status.
        status: u16,
    },
    /// Confirm-by-query found that FinCode now reports another (later) status than the
    /// event's: not delivered, not retried for [`SUPERSEDED_RETRY`], and it no longer holds
    /// back later events of its ordering key.
    Superseded,
    /// Anything else: why (a status or an error kind, never content), and the app's
    /// `Retry-After`.
    Failed {
        /// The kind of failure, a word from a fixed set for the audit trail:
        /// `app_status`, `timeout`, `connect_error`, `connection_error`, `unconfirmed`,
        /// `signing_failed`.
        reason: &'static str,
        /// The app's status, when it answered.
        status: Option<u16>,
        /// Short, bounded reason for the store and the logs, e.g. `status 503` or
        /// `connect error`.
        why: String,
        /// When the app asked to be called again.
        retry_after: Option<Duration>,
    },
}

/// The lease ran out and another claimant took the event: whatever this attempt did, the
/// new owner's outcome is the one recorded.
fn lost(event: &StoredEvent) {
    tracing::warn!(
        target: "fincode_sidecar::webhooks",
        id = event.id,
        correlation_id = %event.correlation_id,
        "webhook lease lost (the attempt outlived it); the event's new claimant records its outcome"
    );
}

/// Sends one event to the app. The HTTP implementation is [`crate::delivery::HttpDelivery`].
pub trait Deliver: Send + Sync + fmt::Debug + 'static {
    /// One attempt at delivering `event`. It must end within the attempt timeout, which
    /// is shorter than the lease (`webhooks.delivery_timeout` < `webhooks.lease`), or
    /// another claimant may deliver the same event at the same time.
    fn deliver<'a>(&'a self, event: &'a StoredEvent) -> BoxFuture<'a, Attempt>;
}

/// The one clock of the webhook parts: `received_at`, due times, leases, ages and replays
/// are all read from it, so they can be compared with each other.
///
/// In production it is the wall clock. It used to be a monotonic clock anchored to the
/// wall clock at start-up, while the listener stamped events with the wall clock itself:
/// after days of NTP corrections (or a suspended VM) the two disagreed, and so did two
/// replicas sharing a store.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// `None`: the wall clock. `Some`: wall time at creation plus tokio's elapsed time.
    following_tokio: Option<(SystemTime, tokio::time::Instant)>,
}

// === impl Clock ===

impl Clock {
    /// The wall clock (`SystemTime::now()`): the production clock.
    pub const fn new() -> Self {
        Self {
            following_tokio: None,
        }
    }

    /// For tests: starts at the wall clock's now, then advances with tokio's clock (so it
    /// pauses, and jumps with `tokio::time::advance`).
    pub fn following_tokio() -> Self {
        Self {
            following_tokio: Some((SystemTime::now(), tokio::time::Instant::now())),
        }
    }

    /// The current time.
    pub fn now(&self) -> SystemTime {
        match self.following_tokio {
            None => SystemTime::now(),
            Some((origin, started)) => origin + started.elapsed(),
        }
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// When to give up on an event.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    /// Attempts before the event is dead.
    pub max_attempts: u32,
    /// Age (since it became pending: receipt or replay) after which it is dead.
    pub max_age: Duration,
    /// Waits between attempts.
    pub backoff: Backoff,
    /// The longest wait, also the cap on the app's `Retry-After`.
    pub backoff_cap: Duration,
    /// Deliveries in flight at once.
    pub concurrency: usize,
    /// How long a claimed event is ours before another claimant may take it.
    pub lease: Duration,
    /// How long delivered events are kept.
    pub retention: Duration,
    /// How long a purged event's dedupe key is still recognised (from its receipt).
    pub dedupe_retention: Duration,
}

/// The policy the tests start from: a day to live, retried after 1 s to a minute, four at
/// once.
#[cfg(test)]
impl Policy {
    pub(crate) fn for_tests(max_attempts: u32) -> Self {
        Self {
            max_attempts,
            max_age: Duration::from_hours(24),
            backoff: Backoff::full_jitter(Duration::from_secs(1), Duration::from_mins(1)),
            backoff_cap: Duration::from_mins(1),
            concurrency: 4,
            lease: Duration::from_secs(30),
            retention: Duration::from_hours(1),
            dedupe_retention: Duration::from_hours(3),
        }
    }
}

/// Delivers events from `store` through `deliver`.
#[derive(Debug)]
pub struct Dispatcher {
    store: Arc<dyn EventStore>,
    deliver: Arc<dyn Deliver>,
    policy: Policy,
    metrics: WebhookMetrics,
    wake: Arc<Notify>,
    clock: Clock,
    owner: String,
    audit: Audit,
}

// === impl Dispatcher ===

impl Dispatcher {
    /// A dispatcher; `wake` is notified by the listener on every new event; `audit`
    /// records each delivered and dead event.
    pub fn new(
        store: Arc<dyn EventStore>,
        deliver: Arc<dyn Deliver>,
        policy: Policy,
        metrics: WebhookMetrics,
        wake: Arc<Notify>,
        clock: Clock,
        audit: Option<Auditor>,
    ) -> Self {
        Self {
            store,
            deliver,
            policy,
            metrics,
            wake,
            clock,
            // Leases name their owner so an operator can tell replicas apart.
            owner: format!("{}-{}", std::process::id(), uuid::Uuid::now_v7()),
            audit: Audit::new(audit),
        }
    }

    /// Delivers until `shutdown` resolves, then claims nothing more and lets in-flight
    /// deliveries finish for up to `drain` (`shutdown.grace`); one still running then is
    /// abandoned with its lease and delivered again, by this sidecar after a restart or by
    /// another replica, once the lease ends: never lost.
    pub async fn run(self, shutdown: impl Future<Output = ()>, drain: Duration) {
        let this = Arc::new(self);
        let permits = Arc::new(Semaphore::new(this.policy.concurrency.max(1)));
        tokio::pin!(shutdown);
        // The gauges and the purge run beside the claim loop, not in it: a count waits
        // for the store's one read connection (behind an operator's listing, say) and a
        // purge of a day's deliveries takes many chunks, and neither may hold up a claim.
        // Dropping the set (when `run` returns or is dropped) stops them.
        let mut background = tokio::task::JoinSet::new();
        background.spawn(every(DEPTH_EVERY, this.clone(), |this| async move {
            this.refresh_queue_depth().await;
        }));
        background.spawn(every(PURGE_EVERY, this.clone(), |this| async move {
            this.purge().await;
        }));
        loop {
            let free = permits.available_permits();
            if free > 0 {
                match this
                    .store
                    .claim_due(this.clock.now(), free, this.policy.lease, &this.owner)
                    .await
                {
                    Ok(events) => {
                        for event in events {
                            let Ok(permit) = permits.clone().try_acquire_owned() else {
                                break;
                            };
                            let this = this.clone();
                            tokio::spawn(async move {
                                this.attempt(event).await;
                                drop(permit);
                                this.wake.notify_one();
                            });
                        }
                    }
                    Err(error) => tracing::warn!(%error, "cannot claim webhook events"),
                }
            }
            tokio::select! {
                () = this.wake.notified() => {}
                () = tokio::time::sleep(POLL) => {}
                () = &mut shutdown => break,
            }
        }
        let all = u32::try_from(this.policy.concurrency.max(1)).unwrap_or(u32::MAX);
        if tokio::time::timeout(drain, permits.acquire_many(all))
            .await
            .is_err()
        {
            tracing::warn!("webhook deliveries still running at shutdown; they will be retried");
        }
    }

    /// Deletes delivered events older than the retention period, keeping their dedupe
    /// keys for the dedupe retention.
    pub(crate) async fn purge(&self) {
        let now = self.clock.now();
        let (Some(before), Some(forget_keys_before)) = (
            now.checked_sub(self.policy.retention),
            now.checked_sub(self.policy.dedupe_retention),
        ) else {
            return;
        };
        match self.store.purge_delivered(before, forget_keys_before).await {
            Ok(0) => {}
            Ok(purged) => tracing::info!(
                target: "fincode_sidecar::webhooks",
                purged,
                "delivered webhook events past webhooks.retention deleted"
            ),
            Err(error) => tracing::warn!(%error, "cannot delete old webhook events"),
        }
    }

    /// Refreshes the queue-depth and store-health gauges.
    pub(crate) async fn refresh_queue_depth(&self) {
        // Pending rows only: counting every status would also walk the delivered
        // events kept for webhooks.retention, every second.
        if let Ok(pending) = self.store.count_pending().await {
            self.metrics.set_queue_depth(pending);
        }
        // After the count, so a store failing every call shows at once.
        self.metrics
            .set_store_healthy(self.store.health().is_healthy());
    }

    /// One attempt at one claimed event, and what the store records about it. The
    /// claim already counted the attempt; an outcome is recorded (logged, counted,
    /// audited) only if the lease still held when it was written.
    pub async fn attempt(&self, claimed: Claimed) {
        let Claimed { event, lease } = claimed;
        let now = self.clock.now();
        // From when it became pending, not from receipt: a replayed dead letter older than
        // max_age gets its attempts, instead of dying again at once.
        let age = now.duration_since(event.pending_since).unwrap_or_default();
        let attempts = event.attempts;
        if age > self.policy.max_age {
            self.dead(&event, &lease, "max_age", ("max_age", None))
                .await;
            return;
        }
        // Earlier claims that never ended (the sidecar died mid-delivery each time) count:
        // a crash loop ends in a dead letter instead of going on for ever.
        if attempts > self.policy.max_attempts {
            self.dead(&event, &lease, "max_attempts", ("max_attempts", None))
                .await;
            return;
        }
        let started = tokio::time::Instant::now();
        match self.deliver.deliver(&event).await {
            Attempt::Delivered { status } => {
                let latency = started.elapsed();
                match self.store.mark_delivered(&lease).await {
                    Ok(true) => {}
                    Ok(false) => return lost(&event),
                    Err(error) => {
                        tracing::error!(%error, id = event.id, "delivered but not recorded; it will be delivered again");
                        return;
                    }
                }
                let since_receipt = self
                    .clock
                    .now()
                    .duration_since(event.received_at)
                    .unwrap_or_default();
                self.metrics.delivery("delivered");
                self.metrics.delivered_after(since_receipt.as_secs_f64());
                self.audit
                    .delivered(&event, attempts, status, latency, since_receipt);
                tracing::info!(
                    target: "fincode_sidecar::webhooks",
                    id = event.id,
                    correlation_id = %event.correlation_id,
                    attempts,
                    "webhook delivered"
                );
            }
            Attempt::Superseded => {
                self.metrics.delivery("superseded");
                tracing::info!(
                    target: "fincode_sidecar::webhooks",
                    id = event.id,
                    correlation_id = %event.correlation_id,
                    attempts,
                    retry_in_s = SUPERSEDED_RETRY.as_secs(),
                    "webhook superseded: FinCode reports a later status; later events of its order key go first"
                );
                match self
                    .store
                    .mark_superseded(&lease, self.clock.now() + SUPERSEDED_RETRY)
                    .await
                {
                    Ok(true) => {}
                    Ok(false) => lost(&event),
                    Err(error) => {
                        tracing::error!(%error, id = event.id, "superseded attempt not recorded; the lease will expire and it is retried");
                    }
                }
            }
            Attempt::Failed {
                reason,
                status,
                why,
                retry_after,
            } => {
                self.metrics.delivery("failed");
                if attempts >= self.policy.max_attempts {
                    self.dead(&event, &lease, &why, (reason, status)).await;
                    return;
                }
                let delay = self.next_delay(attempts, retry_after);
                tracing::warn!(
                    target: "fincode_sidecar::webhooks",
                    id = event.id,
                    correlation_id = %event.correlation_id,
                    attempts,
                    why = %why,
                    retry_in_ms = delay.as_millis(),
                    "webhook delivery failed"
                );
                match self
                    .store
                    .mark_failed(&lease, self.clock.now() + delay, &why)
                    .await
                {
                    Ok(true) => {}
                    Ok(false) => lost(&event),
                    Err(error) => {
                        tracing::error!(%error, id = event.id, "failed attempt not recorded; the lease will expire and it is retried");
                    }
                }
            }
        }
    }

    /// The wait after failed attempt number `attempts`: full jitter, or the app's
    /// `Retry-After` when that is longer (never beyond the backoff cap).
    pub fn next_delay(&self, attempts: u32, retry_after: Option<Duration>) -> Duration {
        let delay = self.policy.backoff.delay(attempts.saturating_sub(1));
        match retry_after {
            Some(after) => delay.max(after.min(self.policy.backoff_cap)),
            None => delay,
        }
    }

    /// Moves `event` to the dead letters: `why` for the store and the log, `last` (the
    /// bounded reason and the app's status) for the audit trail.
    async fn dead(
        &self,
        event: &StoredEvent,
        lease: &Lease,
        why: &str,
        last: (&'static str, Option<u16>),
    ) {
        let attempts = event.attempts;
        match self.store.mark_dead(lease, why).await {
            Ok(true) => {}
            Ok(false) => return lost(event),
            Err(error) => {
                tracing::error!(%error, id = event.id, "dead letter not recorded; it will be retried");
                return;
            }
        }
        self.metrics.delivery("dead");
        self.audit.dead(event, attempts, last.0, last.1);
        tracing::warn!(
            target: "fincode_sidecar::webhooks",
            id = event.id,
            correlation_id = %event.correlation_id,
            attempts,
            why,
            "webhook is a dead letter; replay it with `fincode-sidecar webhooks replay`"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use bytes::Bytes;
    use fincode_store::{
        Counts, EventId, Health, Inserted, NewEvent, SqliteStore, Status, StoreError,
    };
    use prometheus_client::registry::Registry;

    use super::*;

    /// The app, scripted: answers each attempt from a list, then 200; records when.
    #[derive(Debug, Default)]
    struct App {
        answers: Mutex<Vec<Attempt>>,
        seen: Mutex<Vec<(i64, SystemTime)>>,
        clock: Mutex<Option<Clock>>,
    }

    impl Deliver for App {
        fn deliver<'a>(&'a self, event: &'a StoredEvent) -> BoxFuture<'a, Attempt> {
            let now = self.clock.lock().unwrap().map(|c| c.now()).unwrap();
            self.seen.lock().unwrap().push((event.id, now));
            let mut answers = self.answers.lock().unwrap();
            let answer = if answers.is_empty() {
                Attempt::Delivered { status: 200 }
            } else {
                answers.remove(0)
            };
            Box::pin(std::future::ready(answer))
        }
    }

    fn down(times: usize) -> Vec<Attempt> {
        (0..times)
            .map(|_| Attempt::Failed {
                reason: "app_status",
                status: Some(503),
                why: "status 503".to_owned(),
                retry_after: None,
            })
            .collect()
    }

    struct Setup {
        dispatcher: Dispatcher,
        store: Arc<dyn EventStore>,
        app: Arc<App>,
        clock: Clock,
        _dir: tempfile::TempDir,
    }

    async fn setup(max_attempts: u32, answers: Vec<Attempt>) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn EventStore> =
            Arc::new(SqliteStore::open(&dir.path().join("events.db")).unwrap());
        let clock = Clock::following_tokio();
        let app = Arc::new(App {
            answers: Mutex::new(answers),
            seen: Mutex::default(),
            clock: Mutex::new(Some(clock)),
        });
        let dispatcher = Dispatcher::new(
            store.clone(),
            app.clone(),
            Policy::for_tests(max_attempts),
            WebhookMetrics::register(&mut Registry::default()),
            Arc::new(Notify::new()),
            clock,
            None,
        );
        store
            .insert(NewEvent {
                dedupe_key: "TRANSACTION_STATUS:PCN1:PAID".to_owned(),
                order_key: None,
                correlation_id: "c-1".to_owned(),
                body: Bytes::from_static(br#"{"Reference":"PCN1","Status":"PAID"}"#),
                headers: vec![],
                received_at: clock.now(),
            })
            .await
            .unwrap();
        Setup {
            dispatcher,
            store,
            app,
            clock,
            _dir: dir,
        }
    }

    /// Claims what is due now and attempts it, as the run loop does.
    async fn tick(s: &Setup) -> usize {
        let due = s
            .store
            .claim_due(s.clock.now(), 10, Duration::from_secs(30), "test")
            .await
            .unwrap();
        let n = due.len();
        for claimed in due {
            s.dispatcher.attempt(claimed).await;
        }
        n
    }

    #[tokio::test(start_paused = true)]
    async fn an_app_that_stays_down_gets_the_backoff_schedule_then_a_dead_letter() {
        let s = setup(5, down(100)).await;
        let mut attempts = 0;
        while attempts < 5 {
            if tick(&s).await == 1 {
                attempts += 1;
                let event = s.store.get(1).await.unwrap().unwrap();
                assert_eq!(event.attempts, attempts);
                if attempts < 5 {
                    assert_eq!(event.status, Status::Pending);
                    // The wait after failure n is within the full-jitter ceiling
                    // 1s * 2^(n-1), and nothing is attempted before it.
                    let wait = event
                        .next_attempt_at
                        .duration_since(s.clock.now())
                        .unwrap_or_default();
                    let ceiling = Duration::from_secs(1 << (attempts - 1));
                    assert!(
                        wait <= ceiling,
                        "attempt {attempts}: {wait:?} > {ceiling:?}"
                    );
                    assert_eq!(tick(&s).await, 0, "not due before its time");
                }
            }
            tokio::time::advance(Duration::from_millis(100)).await;
        }
        let event = s.store.get(1).await.unwrap().unwrap();
        assert_eq!(event.status, Status::Dead);
        assert_eq!(event.last_error.as_deref(), Some("status 503"));
        let seen = s.app.seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 5);
        for (n, pair) in seen.windows(2).enumerate() {
            let gap = pair[1].1.duration_since(pair[0].1).unwrap();
            // Each gap: at most the ceiling plus one 100 ms step of the test's clock.
            let ceiling = Duration::from_secs(1 << n) + Duration::from_millis(100);
            assert!(gap <= ceiling, "gap {n}: {gap:?}");
        }

        // Dead letters stay dead until an operator replays them; then they are delivered.
        tokio::time::advance(Duration::from_hours(1)).await;
        assert_eq!(tick(&s).await, 0);
        assert!(s.store.replay(1, s.clock.now()).await.unwrap());
        s.app.answers.lock().unwrap().clear();
        assert_eq!(tick(&s).await, 1);
        let event = s.store.get(1).await.unwrap().unwrap();
        assert_eq!(event.status, Status::Delivered);
        assert_eq!(event.attempts, 1, "a replay starts counting again");
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_from_the_app_is_honoured_up_to_the_cap() {
        let s = setup(
            10,
            vec![Attempt::Failed {
                reason: "app_status",
                status: Some(429),
                why: "status 429".to_owned(),
                retry_after: Some(Duration::from_secs(45)),
            }],
        )
        .await;
        tick(&s).await;
        let event = s.store.get(1).await.unwrap().unwrap();
        let wait = event
            .next_attempt_at
            .duration_since(s.clock.now())
            .unwrap_or_default();
        // Paused time may creep while the store's writer thread commits: allow 1 s.
        assert!(
            wait >= Duration::from_secs(44) && wait <= Duration::from_mins(1),
            "{wait:?}"
        );
        assert_eq!(
            s.dispatcher.next_delay(1, Some(Duration::from_hours(1))),
            Duration::from_mins(1),
            "capped at backoff_cap"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn delivered_events_are_deleted_after_the_retention_period() {
        let s = setup(5, Vec::new()).await;
        assert_eq!(tick(&s).await, 1);
        s.dispatcher.purge().await;
        assert!(
            s.store.get(1).await.unwrap().is_some(),
            "still within retention"
        );
        tokio::time::advance(Duration::from_hours(2)).await;
        s.dispatcher.purge().await;
        assert!(
            s.store.get(1).await.unwrap().is_none(),
            "past retention (1h)"
        );
        let again = NewEvent {
            dedupe_key: "TRANSACTION_STATUS:PCN1:PAID".to_owned(),
            order_key: None,
            correlation_id: "c-2".to_owned(),
            body: Bytes::from_static(br#"{"Reference":"PCN1","Status":"PAID"}"#),
            headers: vec![],
            received_at: s.clock.now(),
        };
        assert_eq!(
            s.store.insert(again.clone()).await.unwrap(),
            fincode_store::Inserted::Duplicate(1),
            "its key is kept for the dedupe retention (3h)"
        );
        tokio::time::advance(Duration::from_hours(2)).await;
        s.dispatcher.purge().await;
        assert!(
            matches!(
                s.store.insert(again).await.unwrap(),
                fincode_store::Inserted::New(_)
            ),
            "and forgotten after it"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn events_older_than_max_age_become_dead_without_an_attempt() {
        let s = setup(100, down(100)).await;
        tokio::time::advance(Duration::from_hours(25)).await;
        tick(&s).await;
        let event = s.store.get(1).await.unwrap().unwrap();
        assert_eq!(event.status, Status::Dead);
        assert_eq!(event.last_error.as_deref(), Some("max_age"));
        assert!(s.app.seen.lock().unwrap().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_replayed_dead_letter_older_than_max_age_is_delivered() {
        let s = setup(100, down(100)).await;
        tokio::time::advance(Duration::from_hours(25)).await;
        tick(&s).await;
        assert_eq!(s.store.get(1).await.unwrap().unwrap().status, Status::Dead);
        assert!(s.store.replay(1, s.clock.now()).await.unwrap());
        s.app.answers.lock().unwrap().clear();
        assert_eq!(tick(&s).await, 1);
        let event = s.store.get(1).await.unwrap().unwrap();
        assert_eq!(
            (event.status, event.last_error.as_deref()),
            (Status::Delivered, None),
            "max_age counts from the replay, not from receipt"
        );
        assert_eq!(s.app.seen.lock().unwrap().len(), 1);
    }

    /// `fincode_webhook_store_healthy` follows the store: 1 while it works, 0 once it
    /// fails every call.
    #[tokio::test]
    async fn the_store_health_gauge_follows_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let sqlite = Arc::new(SqliteStore::open(&dir.path().join("events.db")).unwrap());
        let mut registry = Registry::default();
        let dispatcher = Dispatcher::new(
            sqlite.clone(),
            Arc::new(App::default()),
            Policy {
                max_age: Duration::from_hours(1),
                concurrency: 1,
                dedupe_retention: Duration::from_hours(1),
                ..Policy::for_tests(3)
            },
            WebhookMetrics::register(&mut registry),
            Arc::new(Notify::new()),
            Clock::new(),
            None,
        );
        let gauge = |registry: &Registry| {
            let mut text = String::new();
            prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
            text.lines()
                .find(|l| l.starts_with("fincode_webhook_store_healthy "))
                .map(str::to_owned)
        };
        dispatcher.refresh_queue_depth().await;
        assert_eq!(
            gauge(&registry).as_deref(),
            Some("fincode_webhook_store_healthy 1")
        );
        sqlite.close().await;
        dispatcher.refresh_queue_depth().await;
        assert_eq!(
            gauge(&registry).as_deref(),
            Some("fincode_webhook_store_healthy 0")
        );
    }

    /// A store whose counts never answer (its one read connection busy behind a long
    /// listing, say); everything else goes to SQLite.
    #[derive(Debug)]
    struct StuckCounts(Arc<dyn EventStore>);

    #[async_trait::async_trait]
    impl EventStore for StuckCounts {
        async fn insert(&self, event: NewEvent) -> Result<Inserted, StoreError> {
            self.0.insert(event).await
        }
        async fn claim_due(
            &self,
            now: SystemTime,
            limit: usize,
            lease: Duration,
            owner: &str,
        ) -> Result<Vec<Claimed>, StoreError> {
            self.0.claim_due(now, limit, lease, owner).await
        }
        async fn mark_delivered(&self, lease: &Lease) -> Result<bool, StoreError> {
            self.0.mark_delivered(lease).await
        }
        async fn mark_failed(
            &self,
            lease: &Lease,
            next_attempt_at: SystemTime,
            error: &str,
        ) -> Result<bool, StoreError> {
            self.0.mark_failed(lease, next_attempt_at, error).await
        }
        async fn mark_superseded(
            &self,
            lease: &Lease,
            next_attempt_at: SystemTime,
        ) -> Result<bool, StoreError> {
            self.0.mark_superseded(lease, next_attempt_at).await
        }
        async fn mark_dead(&self, lease: &Lease, error: &str) -> Result<bool, StoreError> {
            self.0.mark_dead(lease, error).await
        }
        async fn get(&self, id: EventId) -> Result<Option<StoredEvent>, StoreError> {
            self.0.get(id).await
        }
        async fn list(
            &self,
            status: Option<Status>,
            limit: usize,
        ) -> Result<Vec<StoredEvent>, StoreError> {
            self.0.list(status, limit).await
        }
        async fn replay(&self, id: EventId, now: SystemTime) -> Result<bool, StoreError> {
            self.0.replay(id, now).await
        }
        async fn replay_all_dead(&self, now: SystemTime) -> Result<u64, StoreError> {
            self.0.replay_all_dead(now).await
        }
        async fn counts(&self) -> Result<Counts, StoreError> {
            std::future::pending().await
        }
        async fn count_pending(&self) -> Result<u64, StoreError> {
            std::future::pending().await
        }
        async fn oldest_pending(&self) -> Result<Option<SystemTime>, StoreError> {
            std::future::pending().await
        }
        fn health(&self) -> Health {
            self.0.health()
        }
        async fn purge_delivered(
            &self,
            before: SystemTime,
            forget_keys_before: SystemTime,
        ) -> Result<u64, StoreError> {
            self.0.purge_delivered(before, forget_keys_before).await
        }
    }

    /// The queue-depth gauge is refreshed beside the claim loop: a count that does not
    /// answer delays no delivery.
    #[tokio::test]
    async fn a_stuck_count_does_not_hold_up_deliveries() {
        let s = setup(3, Vec::new()).await;
        let stuck: Arc<dyn EventStore> = Arc::new(StuckCounts(s.store.clone()));
        let dispatcher = Dispatcher::new(
            stuck,
            s.app.clone(),
            s.dispatcher.policy,
            WebhookMetrics::register(&mut Registry::default()),
            Arc::new(Notify::new()),
            s.clock,
            None,
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(dispatcher.run(
            async move {
                let _ = stopped.await;
            },
            Duration::from_secs(10),
        ));
        // Real time: the store's writer is a thread, which paused time would outrun.
        for _ in 0..250 {
            if !s.app.seen.lock().unwrap().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(s.app.seen.lock().unwrap().len(), 1, "delivered");
        let _ = stop.send(());
        tokio::time::timeout(Duration::from_secs(30), running)
            .await
            .expect("the dispatcher stops, its stuck count with it")
            .unwrap();
    }

    /// A sidecar that dies mid-delivery every time (a poisonous event) still uses up
    /// attempts: the claim counts them, and the event ends a dead letter.
    #[tokio::test(start_paused = true)]
    async fn a_crash_loop_ends_in_a_dead_letter() {
        let s = setup(3, Vec::new()).await;
        for crash in 1..=3 {
            let claimed = s
                .store
                .claim_due(s.clock.now(), 10, Duration::from_secs(30), "crashing")
                .await
                .unwrap();
            assert_eq!(claimed.len(), 1, "claim {crash}");
            // ...and the claimant dies; the lease runs out.
            tokio::time::advance(Duration::from_secs(31)).await;
        }
        assert_eq!(tick(&s).await, 1);
        let event = s.store.get(1).await.unwrap().unwrap();
        assert_eq!(
            (event.status, event.last_error.as_deref()),
            (Status::Dead, Some("max_attempts"))
        );
        assert!(s.app.seen.lock().unwrap().is_empty());
    }

    /// The clock production uses is the wall clock itself, the one `received_at` is
    /// stamped with, not a monotonic clock that drifts from it (and from other replicas).
    #[tokio::test(start_paused = true)]
    async fn the_production_clock_is_the_wall_clock() {
        let clock = Clock::new();
        tokio::time::advance(Duration::from_hours(1)).await;
        let wall = SystemTime::now();
        let ours = clock.now();
        let skew = ours.duration_since(wall).unwrap_or_else(|e| e.duration());
        assert!(skew < Duration::from_secs(1), "{skew:?} apart");
    }
}
