//! End-to-end webhooks on Postgres: the real binary (one or two processes) keeps its
//! events in a real Postgres schema, the sandbox sends signed FinCode events, a stand-in
//! app receives the deliveries. What only a shared database brings: two replicas taking
//! the same stream exactly once, a replica killed while it holds leases, backends killed
//! under a sidecar while it acknowledges, and `store status` reading the shared queue.
//!
//! The server is `FINCODE_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`). Without one, each test says so on stderr
//! and passes; under `CI=true` it fails instead. Each test works in a schema of its own,
//! dropped at the end.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod store_status;
mod support;
#[path = "../crates/store/tests/support/test_schema.rs"]
mod test_schema;

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    io::Read,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use fincode_sandbox::{SendWebhooks, SentWebhook, transaction_status_event};
use store_status::{assert_three_pending_one_delivered, store_status};
use support::*;
use test_schema::{TestSchema, url};
use tokio::time::Instant;

const SECRET: &str = "fincode-webhook-secret-for-tests";
const PATH: &str = "/webhooks/fincode";

// === impl TestSchema ===

impl TestSchema {
    /// One number from `sql`, which may name the schema as `{schema}`.
    async fn count(&self, sql: &str) -> i64 {
        self.value(sql, &[]).await
    }
}

/// What every test here starts with: a schema of its own, the FinCode sandbox, and the
/// app; `None` without a Postgres server.
async fn start() -> Option<(TestSchema, TestSandbox, TestApp)> {
    let schema = TestSchema::new().await?;
    Some((schema, TestSandbox::start().await, TestApp::start().await))
}

/// `count` distinct PAID events, `PCN{first:010}` onwards.
fn events(first: usize, count: usize) -> Vec<serde_json::Value> {
    (first..first + count)
        .map(|i| transaction_status_event(&reference(i), "PAID"))
        .collect()
}

fn reference(i: usize) -> String {
    format!("PCN{i:010}")
}

fn batch(sidecar: &Sidecar, events: Vec<serde_json::Value>, concurrency: usize) -> SendWebhooks {
    SendWebhooks {
        url: sidecar.webhook_url(PATH),
        signing: hmac_signing(SECRET),
        events,
        copies: 1,
        concurrency,
        tamper: false,
        timestamp_offset_secs: 0,
        extra_headers: Vec::new(),
    }
}

/// A sidecar on `sandbox` delivering to `deliver_to`, its events in `schema`; `adjust`
/// changes the config further.
fn sidecar(
    sandbox: &TestSandbox,
    deliver_to: &str,
    schema: &TestSchema,
    adjust: impl FnOnce(SidecarBuilder) -> SidecarBuilder,
) -> SidecarBuilder {
    let token = sandbox.mint_static_token(Duration::from_hours(1));
    // `webhooks` wants an SQLite path; `postgres_store` takes it out again.
    let unused = sandbox.dir.path().join("unused.db");
    let builder = SidecarBuilder::new(sandbox)
        .static_token(&token)
        .webhooks(deliver_to, SECRET, &unused)
        .postgres_store(&url(), &schema.name);
    adjust(builder)
}

/// The app's deliveries per `Reference`.
fn delivered_per_reference(app: &TestApp) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for delivery in app.deliveries() {
        let reference = delivery.json()["Reference"].as_str().unwrap().to_owned();
        *counts.entry(reference).or_insert(0) += 1;
    }
    counts
}

/// Waits until every reference in `expected` reached the app (panics after `within`,
/// naming the missing ones).
async fn wait_delivered(app: &TestApp, expected: &BTreeSet<String>, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let delivered = delivered_per_reference(app);
        let missing: Vec<_> = expected
            .iter()
            .filter(|r| !delivered.contains_key(*r))
            .collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} acknowledged events never delivered after {within:?}: {missing:?}",
            missing.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn acknowledged(sent: &[SentWebhook], first: usize) -> BTreeSet<String> {
    sent.iter()
        .filter(|s| s.status == Some(200))
        .map(|s| reference(first + s.index))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_sidecars_on_one_schema_deliver_each_event_exactly_once() {
    const EVENTS: usize = 200;
    let Some((schema, sandbox, app)) = start().await else {
        return;
    };
    let a = sidecar(&sandbox, &app.url(), &schema, |b| b)
        .start_ready()
        .await;
    let b = sidecar(&sandbox, &app.url(), &schema, |b| b)
        .start_ready()
        .await;
    assert_ne!(a.webhook_addr(), b.webhook_addr());

    // FinCode's retries land on either replica: each event goes to both, at once.
    let (to_a, to_b) = tokio::join!(
        sandbox.send_webhooks(batch(&a, events(0, EVENTS), 16)),
        sandbox.send_webhooks(batch(&b, events(0, EVENTS), 16)),
    );
    for sent in to_a.iter().chain(&to_b) {
        assert_eq!(
            sent.status,
            Some(200),
            "every copy is acknowledged: {sent:?}"
        );
    }

    let expected: BTreeSet<String> = (0..EVENTS).map(reference).collect();
    wait_delivered(&app, &expected, Duration::from_secs(30)).await;
    // Time for a second delivery of anything, had one been coming.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let delivered = delivered_per_reference(&app);
    let twice: Vec<_> = delivered.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    assert_eq!(
        delivered.len(),
        EVENTS,
        "only the events sent: {delivered:?}"
    );

    // Each event has one id, a UUIDv7, whichever replica stored and delivered it.
    let ids: Vec<String> = app
        .deliveries()
        .iter()
        .map(|d| d.header("webhook-id").unwrap().to_owned())
        .collect();
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), EVENTS, "webhook-id values repeat");
    for id in &ids {
        let uuid = id.strip_prefix("evt_").unwrap_or_else(|| panic!("{id}"));
        let uuid = uuid::Uuid::parse_str(uuid).unwrap_or_else(|e| panic!("{id}: {e}"));
        assert_eq!(uuid.get_version_num(), 7, "{id}");
    }

    // One row per event, all delivered; the two replicas' deliveries add up to the events.
    assert_eq!(
        schema
            .count("SELECT count(*) FROM {schema}.events WHERE status = 'delivered'")
            .await,
        i64::try_from(EVENTS).unwrap()
    );
    assert_eq!(
        schema.count("SELECT count(*) FROM {schema}.events").await,
        200
    );
    let (ma, mb) = (a.scrape().await, b.scrape().await);
    let by = |m: &str| metric_value_labelled(m, "fincode_webhook_deliveries_total", "delivered");
    let (da, db) = (by(&ma), by(&mb));
    assert!(
        (da + db - EVENTS as f64).abs() < 1e-9,
        "deliveries: {da} by A + {db} by B"
    );
    eprintln!("two replicas: A delivered {da}, B delivered {db}");
}

/// An app that takes connections, reads the request and never answers: the sidecar's
/// attempts hang (until `webhooks.delivery_timeout`) with their leases held. Remembers
/// the `Reference` of every event it was sent.
struct HangingApp {
    addr: SocketAddr,
    seen: Arc<Mutex<BTreeSet<String>>>,
}

impl HangingApp {
    fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<BTreeSet<String>>> = Arc::default();
        let seen2 = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let seen = seen2.clone();
                std::thread::spawn(move || {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 4096];
                    // Read what comes; keep the socket open (never answer) until the
                    // sidecar gives up or dies.
                    while let Ok(n) = stream.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        request.extend_from_slice(&buf[..n]);
                        let text = String::from_utf8_lossy(&request);
                        if let Some(at) = text.find("\"Reference\":\"") {
                            let rest = &text[at + 13..];
                            if let Some(end) = rest.find('"') {
                                seen.lock().unwrap().insert(rest[..end].to_owned());
                            }
                        }
                    }
                });
            }
        });
        Self { addr, seen }
    }

    fn url(&self) -> String {
        format!("http://{}{PATH}", self.addr)
    }

    fn seen(&self) -> BTreeSet<String> {
        self.seen.lock().unwrap().clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_killed_holding_leases_loses_nothing_another_delivers_after_the_lease() {
    /// `webhooks.lease`, and a little less (the database's clock and ours may tick apart
    /// by a few milliseconds).
    const LEASE: Duration = Duration::from_secs(5);
    const ALMOST_LEASE: Duration = Duration::from_millis(4_800);
    const IN_FLIGHT: usize = 8;
    const EVENTS: usize = 60;
    let Some((schema, sandbox, app)) = start().await else {
        return;
    };
    let hanging = HangingApp::start();
    let leases = |b: SidecarBuilder| {
        b.set("webhooks.lease", "5s")
            .set("webhooks.delivery_timeout", "4s")
            .set(
                "webhooks.delivery_concurrency",
                i64::try_from(IN_FLIGHT).unwrap(),
            )
    };
    let mut a = sidecar(&sandbox, &hanging.url(), &schema, leases)
        .start_ready()
        .await;

    // No event is claimed before it is sent: A's leases end LEASE after this, or later.
    let sending = Instant::now();
    let sent = sandbox
        .send_webhooks(batch(&a, events(0, EVENTS), 16))
        .await;
    let expected = acknowledged(&sent, 0);
    assert_eq!(expected.len(), EVENTS, "all acknowledged: {sent:?}");

    // A claims IN_FLIGHT events and hangs on them; pull the plug while it holds them.
    let deadline = Instant::now() + Duration::from_secs(10);
    while hanging.seen().len() < IN_FLIGHT {
        assert!(Instant::now() < deadline, "A never tried to deliver");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    a.kill();
    let killed = Instant::now();
    let held = hanging.seen();
    assert!(
        held.len() >= IN_FLIGHT,
        "A held {} leases at the kill",
        held.len()
    );
    assert_eq!(
        schema
            .count(
                "SELECT count(*) FROM {schema}.events WHERE status = 'pending' \
                 AND lease_owner IS NOT NULL AND attempts > 0"
            )
            .await,
        i64::try_from(held.len()).unwrap(),
        "the attempts in flight at the kill hold their leases in the database"
    );

    // B, same schema, delivers to the app that answers.
    let _b = sidecar(&sandbox, &app.url(), &schema, leases)
        .start_ready()
        .await;
    let others: BTreeSet<String> = expected.difference(&held).cloned().collect();
    wait_delivered(&app, &others, Duration::from_secs(20)).await;
    // B must leave A's leased events alone while the leases last.
    let delivered = delivered_per_reference(&app);
    let taken: Vec<_> = held.iter().filter(|r| delivered.contains_key(*r)).collect();
    let early = sending.elapsed();
    if early < ALMOST_LEASE {
        assert!(
            taken.is_empty(),
            "B delivered events under A's live lease, {early:?} after the send: {taken:?}"
        );
    } else {
        eprintln!("B took until {early:?} after the send: lease check skipped");
    }

    wait_delivered(&app, &expected, LEASE + Duration::from_secs(20)).await;
    let after = killed.elapsed();
    assert!(
        sending.elapsed() >= ALMOST_LEASE,
        "held events delivered {after:?} after the kill, before their lease ran out"
    );
    // Deliberate: time for a duplicate delivery to show up, had one been coming.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let delivered = delivered_per_reference(&app);
    assert_eq!(delivered.len(), EVENTS, "{delivered:?}");
    let duplicates: usize = delivered.values().map(|n| n - 1).sum();
    eprintln!(
        "kill -9 with leases held: {} events leased by A at the kill (each attempted once \
         by A, unanswered), all {EVENTS} delivered by B, the held ones {after:?} after the \
         kill; {duplicates} duplicate deliveries to the app",
        held.len()
    );
    assert_eq!(
        duplicates, 0,
        "A never finished an attempt: nothing to repeat"
    );
}

/// The local ports of the TCP sockets process `pid` holds (from `/proc`): how the test
/// finds the backends of one sidecar in `pg_stat_activity` (`client_port`), leaving other
/// processes' connections (other tests, other sessions) alone.
fn tcp_ports_of(pid: u32) -> Vec<i32> {
    let mut inodes = HashSet::new();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    for fd in fds.flatten() {
        if let Ok(target) = std::fs::read_link(fd.path()) {
            let target = target.to_string_lossy().into_owned();
            if let Some(inode) = target
                .strip_prefix("socket:[")
                .and_then(|t| t.strip_suffix(']'))
            {
                inodes.insert(inode.to_owned());
            }
        }
    }
    let mut ports = Vec::new();
    for table in ["tcp", "tcp6"] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(inode)) = (fields.get(1), fields.get(9)) else {
                continue;
            };
            if !inodes.contains(*inode) {
                continue;
            }
            if let Some(port) = local
                .rsplit_once(':')
                .and_then(|(_, port)| i32::from_str_radix(port, 16).ok())
            {
                ports.push(port);
            }
        }
    }
    ports
}

/// Terminates every backend of the sidecar `pid` (found by its sockets' ports); returns
/// how many.
async fn terminate_backends_of(admin: &tokio_postgres::Client, pid: u32) -> i64 {
    let ports = tcp_ports_of(pid);
    let rows = admin
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = 'fincode-sidecar' AND pid <> pg_backend_pid() \
             AND client_port = ANY($1)",
            &[&ports],
        )
        .await
        .unwrap();
    i64::try_from(rows.iter().filter(|r| r.get::<_, bool>(0)).count()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backends_terminated_during_ingest_lose_no_acknowledged_event_and_the_sidecar_recovers() {
    const EVENTS: usize = 1500;
    let Some((schema, sandbox, app)) = start().await else {
        return;
    };
    // A delivery whose "delivered" mark dies with its backend is delivered again once its
    // lease ends: a short lease lets the test see those through.
    let sidecar = sidecar(&sandbox, &app.url(), &schema, |b| {
        b.set("webhooks.lease", "3s")
            .set("webhooks.delivery_timeout", "2s")
    })
    .start_ready()
    .await;
    let pid = sidecar.pid();
    // The sidecar's connections are found, and only they.
    let before = schema
        .count(&format!(
            "SELECT count(*) FROM pg_stat_activity WHERE client_port = ANY(ARRAY{:?}::int[])",
            tcp_ports_of(pid)
        ))
        .await;
    assert!(before >= 1, "no backend of the sidecar found");

    let sending = sandbox.send_webhooks(batch(&sidecar, events(0, EVENTS), 16));
    let killing = async {
        let mut killed = 0;
        let mut rounds = 0;
        // Several rounds while the flood runs: mid-insert, mid-claim, the LISTEN link.
        for _ in 0..8 {
            // Deliberate: kills spread over the flood, in real time.
            tokio::time::sleep(Duration::from_millis(150)).await;
            killed += terminate_backends_of(&schema.admin, pid).await;
            rounds += 1;
        }
        (killed, rounds)
    };
    let (sent, (killed, rounds)) = tokio::join!(sending, killing);
    assert!(killed > 0, "no backend was terminated");
    let mut by_status = BTreeMap::new();
    for s in &sent {
        *by_status.entry(s.status).or_insert(0) += 1;
    }
    eprintln!(
        "pg_terminate_backend: {killed} backends killed in {rounds} rounds during {EVENTS} \
         sends; answers {by_status:?}"
    );
    for s in &sent {
        assert!(
            matches!(s.status, Some(200 | 503)),
            "only 200 or 503 while the database drops connections: {s:?}"
        );
    }
    let expected = acknowledged(&sent, 0);
    assert!(!expected.is_empty());

    // Every acknowledged event is stored, so it reaches the app.
    wait_delivered(&app, &expected, Duration::from_mins(1)).await;

    // And the sidecar heals by itself: ready again, acknowledging and delivering.
    sidecar.wait_ready(Duration::from_secs(30)).await;
    let later = sandbox
        .send_webhooks(batch(&sidecar, events(EVENTS, 20), 4))
        .await;
    assert!(
        later.iter().all(|s| s.status == Some(200)),
        "after the kills: {later:?}"
    );
    let later: BTreeSet<String> = (EVENTS..EVENTS + 20).map(reference).collect();
    wait_delivered(&app, &later, Duration::from_secs(20)).await;

    // In the store at the end: every acknowledged event, and (once the last marks land)
    // nothing left to deliver.
    let rows = schema
        .rows("SELECT convert_from(body, 'UTF8')::json->>'Reference' FROM {schema}.events")
        .await;
    let stored: BTreeSet<String> = rows.iter().map(|r| r.get(0)).collect();
    let lost: Vec<_> = expected.difference(&stored).collect();
    assert!(lost.is_empty(), "acknowledged, not in the store: {lost:?}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while schema
        .count("SELECT count(*) FROM {schema}.events WHERE status <> 'delivered'")
        .await
        > 0
    {
        if Instant::now() >= deadline {
            let rows = schema
                .rows(
                    "SELECT id, status, attempts, last_error, lease_owner, \
                     lease_until - (extract(epoch from clock_timestamp()) * 1000)::bigint, \
                     next_attempt_at - (extract(epoch from clock_timestamp()) * 1000)::bigint \
                     FROM {schema}.events WHERE status <> 'delivered'",
                )
                .await;
            let left: Vec<String> = rows
                .iter()
                .map(|r| {
                    format!(
                        "id {} {} attempts {} error {:?} owner {:?} lease ends in {:?} ms, due in {} ms",
                        r.get::<_, i64>(0),
                        r.get::<_, String>(1),
                        r.get::<_, i32>(2),
                        r.get::<_, Option<String>>(3),
                        r.get::<_, Option<String>>(4),
                        r.get::<_, Option<i64>>(5),
                        r.get::<_, i64>(6),
                    )
                })
                .collect();
            panic!("events left undelivered: {left:#?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let duplicates: usize = delivered_per_reference(&app).values().map(|n| n - 1).sum();
    eprintln!(
        "pg_terminate_backend: {} stored ({} acknowledged), {duplicates} duplicate \
         deliveries to the app (marks lost with their backend: delivered again)",
        stored.len(),
        expected.len() + 20
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn store_status_reads_the_postgres_queue_of_a_running_sidecar() {
    let Some((schema, sandbox, app)) = start().await else {
        return;
    };
    // Failed deliveries wait an hour: what the app does not take stays pending.
    let builder = sidecar(&sandbox, &app.url(), &schema, |b| {
        b.set("webhooks.backoff_base", "1h")
            .set("webhooks.backoff_cap", "1h")
    });
    let config = builder.config_path();
    let sidecar = builder.start_ready().await;

    let sent = sandbox
        .send_webhooks(batch(&sidecar, events(0, 1), 1))
        .await;
    assert_eq!(sent[0].status, Some(200));
    app.wait_for(1, Duration::from_secs(10)).await;
    app.answer(503);
    let sent = sandbox
        .send_webhooks(batch(&sidecar, events(1, 3), 3))
        .await;
    assert!(sent.iter().all(|s| s.status == Some(200)), "{sent:?}");
    // Each tried once and failed.
    let deadline = Instant::now() + Duration::from_secs(10);
    while schema
        .count("SELECT count(*) FROM {schema}.events WHERE status = 'pending' AND attempts > 0")
        .await
        < 3
    {
        assert!(Instant::now() < deadline, "the three were never attempted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let in_schema = format!("(schema {})", schema.name);
    assert_three_pending_one_delivered(&config, "postgres", &in_schema, 0.0..120.0);

    // Reading it disturbed nothing: the sidecar is ready and still stores events.
    sidecar.wait_ready(Duration::from_secs(5)).await;
    let sent = sandbox
        .send_webhooks(batch(&sidecar, events(4, 1), 1))
        .await;
    assert_eq!(sent[0].status, Some(200));
    let output = store_status(&config, &["--json"], &[]);
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["pending"], 4, "{json}");
}
