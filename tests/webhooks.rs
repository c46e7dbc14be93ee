//! End-to-end webhooks: the sandbox sends FinCode-shaped events to the real binary,
//! which verifies, deduplicates, commits to a real SQLite file, acknowledges, and
//! delivers to a stand-in app, signed with its own secret.
#![allow(clippy::unwrap_used)]

mod support;

use std::{
    collections::BTreeSet,
    process::Command,
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use fincode_sandbox::{SendWebhooks, WebhookSigning, transaction_status_event};
use fincode_webhooks::verify::{Scheme, Verifier};
use http::Request;
use http_body_util::Full;
use secrecy::SecretString;
use support::*;

const SECRET: &str = "fincode-webhook-secret-for-tests";
const PATH: &str = "/webhooks/fincode";

fn batch(
    sidecar: &Sidecar,
    signing: WebhookSigning,
    events: Vec<serde_json::Value>,
) -> SendWebhooks {
    SendWebhooks {
        url: sidecar.webhook_url(PATH),
        signing,
        events,
        copies: 1,
        concurrency: 16,
        tamper: false,
        timestamp_offset_secs: 0,
        extra_headers: Vec::new(),
    }
}

/// Sends and returns the statuses in send order (0 when the request failed).
async fn statuses(sandbox: &TestSandbox, batch: SendWebhooks) -> Vec<u16> {
    let mut sent = sandbox.send_webhooks(batch).await;
    sent.sort_by_key(|s| (s.index, s.copy));
    sent.iter().map(|s| s.status.unwrap_or(0)).collect()
}

/// The headers FinCode would send with `body` under the default `hmac` scheme, for
/// requests the sandbox cannot make (a body that is not JSON, a private CA).
fn hmac_headers(body: &[u8]) -> Vec<(http::HeaderName, http::HeaderValue)> {
    let scheme = Scheme::Hmac {
        algorithm: fincode_webhooks::verify::Algorithm::Sha256,
        encoding: fincode_webhooks::verify::Encoding::Hex,
        header: http::HeaderName::from_static("x-fincode-signature"),
        prefix: String::new(),
    };
    fincode_webhooks::verify::sign(
        &scheme,
        &SecretString::from(SECRET),
        body,
        SystemTime::now(),
        "msg_1",
    )
    .unwrap()
}

struct Setup {
    sandbox: TestSandbox,
    app: TestApp,
    sidecar: Sidecar,
    _dir: tempfile::TempDir,
}

async fn setup(adjust: impl FnOnce(SidecarBuilder) -> SidecarBuilder) -> Setup {
    let sandbox = TestSandbox::start().await;
    let app = TestApp::start().await;
    let dir = tempfile::tempdir().unwrap();
    let builder = SidecarBuilder::with_static_token(&sandbox).webhooks(
        &app.url(),
        SECRET,
        &dir.path().join("events.db"),
    );
    let sidecar = adjust(builder).start_ready().await;
    Setup {
        sandbox,
        app,
        sidecar,
        _dir: dir,
    }
}

impl Setup {
    /// Sends `events` signed with the sidecar's secret, as FinCode would; the statuses
    /// the sidecar answered, in order.
    async fn send_signed(&self, events: Vec<serde_json::Value>) -> Vec<u16> {
        statuses(
            &self.sandbox,
            batch(&self.sidecar, hmac_signing(SECRET), events),
        )
        .await
    }
}

fn sidecar_verifier() -> Verifier {
    Verifier::new(
        Scheme::StandardWebhooks,
        vec![SecretString::from(SIGNING_SECRET)],
        Duration::from_mins(5),
    )
    .unwrap()
}

#[tokio::test]
async fn a_signed_event_is_acknowledged_then_delivered_byte_exact_and_signed_by_the_sidecar() {
    let s = setup(|b| b).await;
    let event = transaction_status_event("PCN0000000001", "PAID");
    let sent = s.send_signed(vec![event.clone()]).await;
    assert_eq!(sent, [200]);

    let delivered = s.app.wait_for(1, Duration::from_secs(10)).await;
    let delivery = &delivered[0];
    assert_eq!(
        delivery.body,
        serde_json::to_vec(&event).unwrap(),
        "the original bytes"
    );
    assert_eq!(delivery.header("content-type"), Some("application/json"));
    assert!(
        delivery
            .header("x-request-id")
            .is_some_and(|id| id.len() >= 32)
    );
    assert!(
        delivery.header("x-fincode-signature").is_some(),
        "FinCode's own headers are forwarded"
    );
    // The app can check that the sidecar sent it, with any Standard Webhooks library.
    sidecar_verifier()
        .verify(&delivery.headers, &delivery.body, SystemTime::now())
        .unwrap();
    assert!(delivery.header("webhook-id").unwrap().starts_with("evt_"));

    let metrics = s.sidecar.scrape().await;
    assert!((metric_value(&metrics, "fincode_webhooks_received_total") - 1.0).abs() < 1e-9);
    let delivered =
        metric_value_labelled(&metrics, "fincode_webhook_deliveries_total", "delivered");
    assert!((delivered - 1.0).abs() < 1e-9, "{metrics}");
}

#[tokio::test]
async fn fifty_concurrent_copies_get_fifty_200s_and_one_delivery() {
    let s = setup(|b| b).await;
    let event = transaction_status_event("PCN0000000002", "PAID");
    let mut flood = batch(&s.sidecar, hmac_signing(SECRET), vec![event]);
    flood.copies = 50;
    flood.concurrency = 50;
    let sent = statuses(&s.sandbox, flood).await;
    assert_eq!(sent, vec![200; 50]);

    // The same Reference moving through other statuses is new each time.
    let moves = vec![
        transaction_status_event("PCN0000000002", "PENDING"),
        transaction_status_event("PCN0000000002", "FAILED"),
    ];
    assert_eq!(s.send_signed(moves).await, [200, 200]);
    s.app.wait_for(3, Duration::from_secs(10)).await;
    // Deliberate: time for a fourth (duplicate) delivery to show up, had one been coming.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let statuses: Vec<String> = s
        .app
        .deliveries()
        .iter()
        .map(|d| d.json()["Status"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        statuses.len(),
        3,
        "one delivery per distinct event: {statuses:?}"
    );
    let metrics = s.sidecar.scrape().await;
    assert!((metric_value(&metrics, "fincode_webhooks_duplicates_total") - 49.0).abs() < 1e-9);
}

#[tokio::test]
async fn forged_oversized_and_malformed_requests_are_refused_counted_and_never_delivered() {
    let s = setup(|b| b.set("webhooks.max_body_bytes", 2048)).await;
    let event = transaction_status_event("PCN0000000003", "PAID");
    let signed = |signing, tamper| {
        let mut b = batch(&s.sidecar, signing, vec![event.clone()]);
        b.tamper = tamper;
        b
    };
    assert_eq!(
        statuses(&s.sandbox, signed(hmac_signing(SECRET), true)).await,
        [401],
        "tampered body"
    );
    assert_eq!(
        statuses(&s.sandbox, signed(hmac_signing("not-the-secret"), false)).await,
        [401]
    );
    assert_eq!(
        statuses(&s.sandbox, signed(WebhookSigning::None, false)).await,
        [401]
    );
    let mut big = event.clone();
    big["padding"] = "x".repeat(4096).into();
    assert_eq!(s.send_signed(vec![big]).await, [413]);

    let client = app_client();
    let refused = get(&client, &s.sidecar.webhook_url(PATH)).await;
    assert_eq!(refused.status, 405);
    let refused = send_raw(&client, &s.sidecar.webhook_url("/elsewhere"), b"{}").await;
    assert_eq!(refused.status, 404);
    // Signed, but not JSON.
    let body = b"not json".to_vec();
    let headers = hmac_headers(&body);
    let mut request = Request::post(s.sidecar.webhook_url(PATH));
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let refused = send(&client, request.body(Full::new(Bytes::from(body))).unwrap()).await;
    assert_eq!(refused.status, 400);

    // A 401 says nothing about which check failed.
    let tampered = statuses(&s.sandbox, signed(hmac_signing(SECRET), true)).await;
    assert_eq!(tampered, [401]);

    let metrics = s.sidecar.scrape().await;
    for (reason, count) in [
        ("bad_signature", 3.0),
        ("missing_signature", 1.0),
        ("too_large", 1.0),
        ("method", 1.0),
        ("not_found", 1.0),
        ("bad_json", 1.0),
    ] {
        let seen = metric_value_labelled(&metrics, "fincode_webhooks_rejected_total", reason);
        assert!((seen - count).abs() < 1e-9, "{reason}: {seen}\n{metrics}");
    }
    // Deliberate: time for a delivery of a rejected event to show up, had one been coming.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(s.app.deliveries().is_empty());
}

async fn send_raw(
    client: &hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        Full<Bytes>,
    >,
    url: &str,
    body: &'static [u8],
) -> Collected {
    send(
        client,
        Request::post(url)
            .body(Full::new(Bytes::from_static(body)))
            .unwrap(),
    )
    .await
}

#[tokio::test]
async fn standard_webhooks_timestamps_outside_the_tolerance_are_refused() {
    let whsec = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    let s = setup(|b| {
        b.set("webhooks.scheme", "standard-webhooks")
            .set("webhooks.tolerance", "5m")
            .env("WEBHOOK_SECRET", whsec)
    })
    .await;
    let signing = WebhookSigning::StandardWebhooks {
        secret: whsec.to_owned(),
    };
    let event = transaction_status_event("PCN0000000004", "PAID");
    for (offset, want) in [(-600, 401), (600, 401), (-60, 200)] {
        let mut b = batch(&s.sidecar, signing.clone(), vec![event.clone()]);
        b.timestamp_offset_secs = offset;
        assert_eq!(statuses(&s.sandbox, b).await, [want], "offset {offset}");
    }
    let metrics = s.sidecar.scrape().await;
    let stale = metric_value_labelled(
        &metrics,
        "fincode_webhooks_rejected_total",
        "stale_timestamp",
    );
    assert!((stale - 2.0).abs() < 1e-9, "{metrics}");
    s.app.wait_for(1, Duration::from_secs(10)).await;
}

#[tokio::test]
async fn the_ip_allow_list_believes_forwarded_for_only_from_trusted_proxies() {
    let s = setup(|b| {
        b.set("webhooks.allow_ips", vec!["10.0.0.0/8".to_owned()])
            .set("webhooks.trusted_proxies", vec!["127.0.0.1".to_owned()])
    })
    .await;
    let event = transaction_status_event("PCN0000000005", "PAID");
    let with_xff = |xff: &str| {
        let mut b = batch(&s.sidecar, hmac_signing(SECRET), vec![event.clone()]);
        b.extra_headers = vec![("x-forwarded-for".to_owned(), xff.to_owned())];
        b
    };
    // Straight from 127.0.0.1 (a trusted proxy, but not an allowed source).
    assert_eq!(s.send_signed(vec![event.clone()]).await, [403]);
    assert_eq!(statuses(&s.sandbox, with_xff("192.0.2.7")).await, [403]);
    // Anyone can write the left of the list; the proxy appended the right-most entry.
    assert_eq!(
        statuses(&s.sandbox, with_xff("10.1.2.3, 192.0.2.7")).await,
        [403]
    );
    assert_eq!(
        statuses(&s.sandbox, with_xff("192.0.2.7, 10.1.2.3")).await,
        [200]
    );
    s.app.wait_for(1, Duration::from_secs(10)).await;
}

fn cli(sidecar: &Sidecar, args: &[&str]) -> (bool, String) {
    let admin = format!("http://{}", sidecar.admin_addr());
    let (code, text) = run_binary(
        Command::new(BIN)
            .arg("webhooks")
            .args(args)
            .args(["--admin-url", &admin]),
    );
    (code == Some(0), text)
}

#[tokio::test]
async fn an_app_that_stays_down_gets_a_dead_letter_that_replay_delivers() {
    let s = setup(|b| b.set("webhooks.max_attempts", 3)).await;
    s.app.answer(503);
    let event = transaction_status_event("PCN0000000006", "PAID");
    assert_eq!(s.send_signed(vec![event]).await, [200]);
    // Three attempts 50-200 ms apart, then dead.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let listed = loop {
        let (ok, text) = cli(&s.sidecar, &["list", "--status", "dead"]);
        assert!(ok, "{text}");
        let listed: serde_json::Value = serde_json::from_str(&text).unwrap();
        if !listed["events"].as_array().unwrap().is_empty() {
            break listed;
        }
        assert!(tokio::time::Instant::now() < deadline, "never dead: {text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let dead = &listed["events"][0];
    assert_eq!(dead["attempts"], 3);
    assert_eq!(dead["last_error"], "status 503");
    let id = dead["id"].as_i64().unwrap().to_string();

    // `show` redacts: the beneficiary's name never appears in clear.
    let (ok, shown) = cli(&s.sidecar, &["show", &id]);
    assert!(ok, "{shown}");
    assert!(shown.contains("PCN0000000006") || shown.contains("Reference"));
    assert!(!shown.contains("Jane Beneficiary"), "{shown}");

    s.app.answer(200);
    let (ok, text) = cli(&s.sidecar, &["replay", &id]);
    assert!(ok, "{text}");
    let delivered = s.app.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(delivered[0].json()["Reference"], "PCN0000000006");
    let (_, text) = cli(&s.sidecar, &["list", "--status", "delivered"]);
    assert!(text.contains(&format!("\"id\": {id}")), "{text}");
    let metrics = s.sidecar.scrape().await;
    let dead = metric_value_labelled(&metrics, "fincode_webhook_deliveries_total", "dead");
    assert!((dead - 1.0).abs() < 1e-9, "{metrics}");
}

#[tokio::test]
async fn kill_9_during_a_flood_loses_no_acknowledged_event() {
    let mut s = setup(|b| b).await;
    let events: Vec<_> = (0..400)
        .map(|i| transaction_status_event(&format!("PCN{i:010}"), "PAID"))
        .collect();
    let flood = batch(&s.sidecar, hmac_signing(SECRET), events);
    let Setup {
        sandbox,
        app,
        sidecar,
        ..
    } = &mut s;
    // Let part of the flood be acknowledged and delivered, then pull the plug.
    let (sent, ()) = tokio::join!(sandbox.send_webhooks(flood), async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while app.deliveries().len() < 20 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no deliveries before the kill"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        sidecar.kill();
    });
    let acknowledged: BTreeSet<String> = sent
        .iter()
        .filter(|r| r.status == Some(200))
        .map(|r| format!("PCN{:010}", r.index))
        .collect();
    assert!(
        acknowledged.len() < 400,
        "the kill landed mid-flood ({} acknowledged)",
        acknowledged.len()
    );

    s.sidecar.restart();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let delivered: BTreeSet<String> = s
            .app
            .deliveries()
            .iter()
            .map(|d| d.json()["Reference"].as_str().unwrap().to_owned())
            .collect();
        let missing: Vec<_> = acknowledged.difference(&delivered).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "acknowledged but never delivered: {missing:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn events_with_one_ordering_key_are_delivered_in_arrival_order() {
    let s = setup(|b| b.set("webhooks.order_key", "{Reference}")).await;
    s.app.answer(503);
    let reference = "PCN0000000007";
    for status in ["PENDING", "PROCESSING", "PAID"] {
        let event = transaction_status_event(reference, status);
        assert_eq!(s.send_signed(vec![event]).await, [200]);
    }
    // While the first cannot be delivered, the later ones wait behind it (deliberate: a
    // few of the first's retries pass in real time).
    tokio::time::sleep(Duration::from_millis(600)).await;
    s.app.answer(200);
    let delivered = s.app.wait_for(3, Duration::from_secs(10)).await;
    let order: Vec<_> = delivered
        .iter()
        .map(|d| d.json()["Status"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(order, ["PENDING", "PROCESSING", "PAID"]);
}

#[tokio::test]
async fn unsigned_events_are_delivered_only_when_fincode_confirms_them() {
    let s = setup(|b| {
        b.set("webhooks.scheme", "none")
            .set("webhooks.secret_envs", Vec::<String>::new())
            .set("webhooks.allow_ips", vec!["127.0.0.1/32".to_owned()])
            .set("webhooks.confirm_by_query", true)
            .set("webhooks.max_attempts", 2)
    })
    .await;
    // A real transaction: FinCode knows it as PENDING.
    let created = send(
        &app_client(),
        create_transaction(
            &s.sidecar,
            Some("confirm-1"),
            r#"{"amount":100,"currency":"NGN"}"#,
        ),
    )
    .await;
    assert_eq!(created.status, 200);
    let reference = created.json()["data"]["reference"]
        .as_str()
        .unwrap()
        .to_owned();

    let claims = vec![
        // What FinCode says: delivered.
        transaction_status_event(&reference, "PENDING"),
        // A forged "PAID" for the same reference: never delivered.
        transaction_status_event(&reference, "PAID"),
        // A reference FinCode does not know: never delivered.
        transaction_status_event("PCN9999999999", "PAID"),
    ];
    assert_eq!(
        statuses(&s.sandbox, batch(&s.sidecar, WebhookSigning::None, claims)).await,
        [200, 200, 200]
    );
    let delivered = s.app.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(delivered[0].json()["Status"], "PENDING");
    // The forged PAID is superseded (FinCode reports another status): kept pending, not
    // retried for half an hour, not delivered. The unknown reference runs out of attempts
    // as an unconfirmed dead letter.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (_, text) = cli(&s.sidecar, &["list", "--status", "dead"]);
        let listed: serde_json::Value = serde_json::from_str(&text).unwrap();
        let dead = listed["events"].as_array().unwrap();
        let (_, pending_text) = cli(&s.sidecar, &["list", "--status", "pending"]);
        let pending: serde_json::Value = serde_json::from_str(&pending_text).unwrap();
        let pending = pending["events"].as_array().unwrap();
        if dead.len() == 1 && pending.len() == 1 && !pending[0]["last_error"].is_null() {
            assert!(
                dead[0]["last_error"]
                    .as_str()
                    .unwrap()
                    .starts_with("unconfirmed"),
                "{text}"
            );
            assert_eq!(pending[0]["last_error"], "superseded", "{pending_text}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{text}\n{pending_text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(s.app.deliveries().len(), 1);
    // The confirmation went through the egress path, with the sidecar's credentials.
    assert!(s.sandbox.requests().iter().any(|r| {
        r.uri
            .ends_with(&format!("/transactionmanagement/transactions/{reference}"))
    }));
}

#[tokio::test]
async fn replay_all_dead_delivers_every_dead_letter() {
    let s = setup(|b| b.set("webhooks.max_attempts", 1)).await;
    s.app.answer(500);
    let events: Vec<_> = (0..3)
        .map(|i| transaction_status_event(&format!("PCN00000001{i:02}"), "PAID"))
        .collect();
    assert_eq!(s.send_signed(events).await, [200, 200, 200]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, text) = cli(&s.sidecar, &["list", "--status", "dead"]);
        if text.matches("\"id\"").count() == 3 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.app.answer(200);
    let (ok, text) = cli(&s.sidecar, &["replay", "--all-dead"]);
    assert!(ok && text.contains("\"replayed\": 3"), "{text}");
    s.app.wait_for(3, Duration::from_secs(10)).await;
}

#[tokio::test]
async fn a_replay_from_loopback_needs_the_admin_header_so_a_browser_cannot_trigger_it() {
    let s = setup(|b| b).await;
    let client = app_client();
    let post = |with_header: bool| {
        let mut request = Request::post(s.sidecar.admin_url("/webhooks/dead/replay"))
            // What a web page can send cross-origin without a preflight.
            .header("content-type", "text/plain");
        if with_header {
            request = request.header("x-fincode-admin", "1");
        }
        send(&client, request.body(Full::new(Bytes::new())).unwrap())
    };
    let refused = post(false).await;
    assert_eq!(refused.status, 403);
    let body = String::from_utf8_lossy(&refused.body);
    assert!(body.contains("X-Fincode-Admin"), "{body}");
    let allowed = post(true).await;
    assert_eq!(allowed.status, 200);
    assert_eq!(allowed.json()["replayed"], 0);
    // Reading stays open to loopback.
    assert_eq!(
        get(&app_client(), &s.sidecar.admin_url("/webhooks/events"))
            .await
            .status,
        200
    );
}

#[test]
fn the_verify_cli_checks_a_captured_webhook() {
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("body.json");
    std::fs::write(
        &body,
        br#"{"eventType":"TRANSACTION_STATUS","Reference":"PCN1"}"#,
    )
    .unwrap();
    let headers = hmac_headers(&std::fs::read(&body).unwrap());
    let header = format!("x-fincode-signature: {}", headers[0].1.to_str().unwrap());
    let run = |secret: Option<&str>| {
        let mut command = Command::new(BIN);
        command.args([
            "webhooks",
            "verify",
            "--scheme",
            "hmac-sha256-hex",
            "--secret-env",
            "WH_SECRET",
        ]);
        command
            .args(["--header", &header, "--body-file"])
            .arg(&body);
        command.env_remove("WH_SECRET");
        if let Some(secret) = secret {
            command.env("WH_SECRET", secret);
        }
        run_binary(&mut command)
    };
    let (code, text) = run(Some(SECRET));
    assert_eq!((code, text.trim()), (Some(0), "valid"));
    let (code, text) = run(Some("the-wrong-secret"));
    assert_eq!(code, Some(1), "{text}");
    assert!(text.starts_with("invalid"), "{text}");
    assert!(!text.contains("the-wrong-secret"));
    let (code, text) = run(None);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("WH_SECRET"));
}

/// A CA and a leaf for 127.0.0.1, as PEM files in `dir`; returns the CA's PEM path.
fn tls_files(dir: &std::path::Path) -> std::path::PathBuf {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("cert.pem"), leaf.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), leaf_key.serialize_pem()).unwrap();
    dir.join("ca.pem")
}

#[tokio::test]
async fn the_listener_terminates_tls_itself_when_given_a_certificate() {
    let certs = tempfile::tempdir().unwrap();
    let ca = tls_files(certs.path());
    let s = setup(|b| {
        b.set(
            "webhooks.tls_cert_file",
            certs.path().join("cert.pem").display().to_string(),
        )
        .set(
            "webhooks.tls_key_file",
            certs.path().join("key.pem").display().to_string(),
        )
    })
    .await;
    let body = serde_json::to_vec(&transaction_status_event("PCN0000000008", "PAID")).unwrap();
    let headers = hmac_headers(&body);
    let url = s.sidecar.webhook_url(PATH).replace("http://", "https://");
    let mut request = Request::post(&url);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let client = direct_client(&ca);
    let response = send(&client, request.body(Full::new(Bytes::from(body))).unwrap()).await;
    assert_eq!(response.status, 200);
    s.app.wait_for(1, Duration::from_secs(10)).await;
    // Plain HTTP to the TLS port is not answered as a webhook.
    let plain = app_client()
        .request(
            Request::post(s.sidecar.webhook_url(PATH))
                .body(Full::new(Bytes::from_static(b"{}")))
                .unwrap(),
        )
        .await;
    assert!(plain.is_err() || plain.unwrap().status() != 200);
}

#[tokio::test]
async fn a_shared_secret_is_verified_then_neither_stored_nor_forwarded() {
    let s = setup(|b| b.set("webhooks.scheme", "shared-secret")).await;
    let signing = WebhookSigning::SharedSecret {
        secret: SECRET.to_owned(),
        header: None,
    };
    let event = transaction_status_event("PCN0000000009", "PAID");
    assert_eq!(
        statuses(&s.sandbox, batch(&s.sidecar, signing, vec![event])).await,
        [200]
    );
    let delivered = s.app.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(delivered[0].header("x-webhook-secret"), None);
    assert!(!format!("{:?}", delivered[0].headers).contains(SECRET));
    let (ok, shown) = cli(&s.sidecar, &["show", "1"]);
    assert!(ok, "{shown}");
    assert!(!shown.contains(SECRET), "{shown}");
    assert!(!s.sidecar.output().contains(SECRET));
}

#[tokio::test]
async fn during_a_rotation_events_signed_with_either_secret_are_accepted() {
    let s = setup(|b| {
        b.set(
            "webhooks.secret_envs",
            vec!["WEBHOOK_SECRET".to_owned(), "WEBHOOK_SECRET_NEW".to_owned()],
        )
        .env("WEBHOOK_SECRET_NEW", "the-new-webhook-secret")
    })
    .await;
    let events = |reference: &str| vec![transaction_status_event(reference, "PAID")];
    let old = batch(&s.sidecar, hmac_signing(SECRET), events("PCN0000000010"));
    let new = batch(
        &s.sidecar,
        hmac_signing("the-new-webhook-secret"),
        events("PCN0000000011"),
    );
    let neither = batch(
        &s.sidecar,
        hmac_signing("a-retired-secret"),
        events("PCN0000000012"),
    );
    assert_eq!(statuses(&s.sandbox, old).await, [200]);
    assert_eq!(statuses(&s.sandbox, new).await, [200]);
    assert_eq!(statuses(&s.sandbox, neither).await, [401]);
    s.app.wait_for(2, Duration::from_secs(10)).await;
}
