//! SIGTERM under load, end to end: the real binary, the sandbox and a slow app. Every call
//! in flight completes, no new connection is accepted, the process exits 0 within
//! `shutdown.grace`, and no acknowledged webhook is lost or delivered twice.
#![allow(clippy::unwrap_used)]

mod support;

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use fincode_sandbox::{FaultRule, SendWebhooks, transaction_status_event};
use support::*;

const SECRET: &str = "fincode-webhook-secret-for-shutdown";
const CALLS: usize = 200;
const EVENTS: usize = 40;
const GRACE: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_lets_200_slow_calls_and_deliveries_in_flight_finish_and_loses_no_webhook() {
    let sandbox = TestSandbox::start().await;
    let app = TestApp::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut sidecar = SidecarBuilder::with_static_token(&sandbox)
        .webhooks(&app.url(), SECRET, &dir.path().join("events.db"))
        .set("shutdown.grace", "10s")
        .set("log.level", "info")
        // Neither the local limiter nor the breaker is under test.
        .set("rate_limit.per_second", 0)
        .set("rate_limit.routes", toml::Table::new())
        .start_ready()
        .await;

    // Webhooks first: every event acknowledged, and a slow app (3 s a delivery, longer than
    // the calls) so that deliveries are in flight when the signal comes, outlast the calls'
    // drain, and most events are still queued.
    app.delay(Duration::from_secs(3));
    let sent = sandbox
        .send_webhooks(SendWebhooks {
            url: sidecar.webhook_url("/webhooks/fincode"),
            signing: hmac_signing(SECRET),
            events: (0..EVENTS)
                .map(|i| transaction_status_event(&format!("PCN{i:010}"), "PAID"))
                .collect(),
            concurrency: 8,
            ..SendWebhooks::default()
        })
        .await;
    assert!(
        sent.iter().all(|s| s.status == Some(200)),
        "every event acknowledged"
    );

    // 200 app calls that each take 2 s at FinCode.
    sandbox.add_fault(FaultRule::latency(Duration::from_secs(2)).times(CALLS as u64));
    let client = app_client();
    let calls: Vec<_> = (0..CALLS)
        .map(|_| {
            let (client, url) = (client.clone(), sidecar.url("/sandbox/ping"));
            tokio::spawn(async move { get(&client, &url).await.status.as_u16() })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(15);
    while sandbox.counters().faults_applied.latency < CALLS as u64 {
        assert!(
            Instant::now() < deadline,
            "the calls did not all reach FinCode"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        !app.arrivals().is_empty(),
        "no delivery in flight at the signal"
    );

    let signalled = Instant::now();
    sidecar.signal("TERM");
    // Draining: readiness off at once; the egress port takes no new connection.
    let admin = app_client();
    loop {
        if get(&admin, &sidecar.admin_url("/readyz")).await.status == 503 {
            break;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(2),
            "readiness stayed on"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The listener closes right after readiness goes off, long before the 2 s calls end.
    eventually(
        Duration::from_secs(1),
        "the egress port to refuse new connections while draining",
        async || {
            tokio::net::TcpStream::connect(sidecar.egress_addr())
                .await
                .is_err()
        },
    )
    .await;

    let status = sidecar.wait_exit(GRACE + Duration::from_secs(5)).await;
    let took = signalled.elapsed();
    assert!(status.success(), "{status:?}\n{}", sidecar.output());
    assert!(took < GRACE, "exit took {took:?}, over the grace");
    let mut statuses = BTreeMap::new();
    for call in calls {
        *statuses.entry(call.await.unwrap()).or_insert(0) += 1;
    }
    assert_eq!(
        statuses,
        BTreeMap::from([(200, CALLS)]),
        "every call completed"
    );

    // Every delivery that reached the app was allowed to finish...
    let arrived = app.arrivals().len();
    assert!(arrived < EVENTS, "the signal came after every delivery");
    assert_eq!(app.deliveries().len(), arrived, "a delivery was cut off");

    // ...and the next start delivers the rest: each event exactly once in all.
    app.delay(Duration::ZERO);
    sidecar.restart();
    sidecar.wait_ready(Duration::from_secs(20)).await;
    app.wait_for(EVENTS, Duration::from_secs(30)).await;
    // Deliberate: time for a duplicate delivery to show up, had one been coming.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ids: Vec<String> = app
        .arrivals()
        .iter()
        .map(|d| d.header("webhook-id").unwrap().to_owned())
        .collect();
    let distinct: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), EVENTS, "an event was lost");
    assert_eq!(ids.len(), EVENTS, "an event was delivered twice");
}
