//! The audit trail end to end: the real binary proxies app calls to the sandbox over TLS
//! and writes its trail to a real directory; `audit verify` (the binary again) checks it.
//! Records per call, `fail_closed` with a trail that cannot be written, `kill -9` under
//! load, and the canary (no secret or personal value in any audit byte).
#![allow(clippy::unwrap_used)]

mod support;

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use fincode_audit::Signer;
use fincode_redact::Redactor;
use http::Request;
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper::body::Frame;
use serde_json::Value;
use support::{
    BIN, Sidecar, SidecarBuilder, TestSandbox, app_client, audit_records as records,
    create_transaction, get, run_binary, send,
};

/// Base64 of a fixed 32-byte seed.
const SIGNING_SEED: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const HASH_KEY: &str = "audit-test-hash-key-0123456789abcdef0123456789";

fn audited(builder: SidecarBuilder, dir: &Path) -> SidecarBuilder {
    builder
        .set("audit.enabled", true)
        .set("audit.dir", dir.display().to_string())
        .set("audit.signing_key_env", "TEST_AUDIT_SIGNING_KEY")
        .set("audit.actor", "checkout-service")
        .set("audit.checkpoint_interval", "200ms")
        .set("redact.hash_key_env", "TEST_REDACT_HASH_KEY")
        .env("TEST_AUDIT_SIGNING_KEY", SIGNING_SEED)
        .env("TEST_REDACT_HASH_KEY", HASH_KEY)
}

/// A sidecar with the trail in `dir`, holding a static token the sandbox minted.
fn audited_with_token(sandbox: &TestSandbox, dir: &Path) -> SidecarBuilder {
    let token = sandbox.mint_static_token(Duration::from_hours(1));
    audited(SidecarBuilder::new(sandbox), dir).static_token(&token)
}

fn pseudonym(value: &str) -> String {
    Redactor::builder()
        .hash_key(HASH_KEY.as_bytes().to_vec().into())
        .build()
        .pseudonym(value)
}

fn public_key() -> String {
    Signer::from_base64_seed(SIGNING_SEED)
        .unwrap()
        .public_key_base64()
}

fn all_bytes(dir: &Path) -> String {
    let mut text = String::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        text.push_str(&String::from_utf8_lossy(&bytes));
    }
    text
}

fn verify(dir: &Path) -> (Option<i32>, String) {
    run_binary(
        Command::new(BIN)
            .args(["audit", "verify"])
            .arg(dir)
            .args(["--public-key", &public_key()]),
    )
}

fn http_records(records: &[Value]) -> Vec<&Value> {
    records.iter().filter(|r| r["kind"] == "http").collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_app_call_is_recorded_with_who_what_when_and_its_outcome() {
    let sandbox = TestSandbox::start().await;
    // Minted here: the token is one of the canaries looked for in the trail below.
    let token = sandbox.mint_static_token(Duration::from_hours(1));
    let trail = tempfile::tempdir().unwrap();
    let mut sidecar = audited(SidecarBuilder::new(&sandbox), trail.path())
        .static_token(&token)
        .start();
    let client = app_client();

    let created = send(
        &client,
        create_transaction(
            &sidecar,
            Some("order-77"),
            r#"{"amount":100,"customer_code":"CUST-9"}"#,
        ),
    )
    .await;
    assert_eq!(created.status, 200);
    let data = created.json()["data"].clone();
    let id = data["id"].as_str().unwrap().to_owned();
    let reference = data["reference"].as_str().unwrap().to_owned();
    let fetched = get(
        &client,
        &sidecar.url(&format!("/transactionmanagement/transactions/{reference}")),
    )
    .await;
    assert_eq!(fetched.status, 200);
    let refused = get(&client, &sidecar.url("/securitymanagement/logout")).await;
    assert_eq!(refused.status, 403);
    let correlation = created.header("x-request-id").unwrap().to_owned();

    assert!(sidecar.terminate(Duration::from_secs(15)).await.success());
    let records = records(trail.path());
    let calls = http_records(&records);
    assert_eq!(calls.len(), 3, "{calls:#?}");

    let create = calls[0];
    assert_eq!(
        create["action"],
        "POST /transactionmanagement/create-transaction"
    );
    assert_eq!(create["outcome"], "success");
    assert_eq!(create["status"], 200);
    assert_eq!(create["attempts"], 1);
    assert_eq!(create["correlation_id"], correlation.as_str());
    assert_eq!(create["actor"]["id"], "checkout-service");
    assert!(
        create["actor"]["peer"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    assert!(create["latency_ms"].as_f64().unwrap() > 0.0);
    assert!(create["time"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        create["resources"]["idempotency_key"],
        pseudonym("order-77").as_str()
    );
    assert_eq!(
        create["resources"]["transaction_id"],
        pseudonym(&id).as_str()
    );
    assert_eq!(
        create["resources"]["reference"],
        pseudonym(&reference).as_str()
    );

    // The answer repeats the request's customer code: one member, not two (a JSON object
    // with a name twice is read as its last, and `audit find` would miss the other).
    assert_eq!(
        create["resources"]["customer_code"],
        pseudonym("CUST-9").as_str()
    );
    let raw: String = std::fs::read_dir(trail.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    let create_line = raw
        .lines()
        .find(|l| l.contains("\"action\":\"POST /transactionmanagement/create-transaction\""))
        .unwrap();
    assert_eq!(
        create_line.matches("\"customer_code\":").count(),
        1,
        "{create_line}"
    );

    let fetch = calls[1];
    assert_eq!(
        fetch["action"],
        "GET /transactionmanagement/transactions/{id}"
    );
    assert_eq!(
        fetch["resources"]["path_id"],
        pseudonym(&reference).as_str()
    );
    // The answer names the transaction by the reference it was fetched by (its
    // pseudonym taken over from `path_id`), and by its id.
    assert_eq!(
        fetch["resources"]["reference"],
        pseudonym(&reference).as_str()
    );
    assert_eq!(
        fetch["resources"]["transaction_id"],
        pseudonym(&id).as_str()
    );
    assert_eq!(fetch["outcome"], "success");

    let forbidden = calls[2];
    assert_eq!(forbidden["outcome"], "error");
    assert_eq!(forbidden["error"], "forbidden_route");
    assert_eq!(forbidden["status"], 403);
    assert_eq!(forbidden["attempts"], 0);

    // The sidecar's own start and stop, with a digest of the config, not its values.
    let actions: Vec<&str> = records
        .iter()
        .filter(|r| r["kind"] == "sidecar")
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["sidecar.start", "sidecar.stop"]);
    assert_eq!(
        records
            .iter()
            .find(|r| r["action"] == "sidecar.start")
            .unwrap()["config_sha256"]
            .as_str()
            .unwrap()
            .len(),
        64
    );

    // No clear id, key or token anywhere in the trail.
    let bytes = all_bytes(trail.path());
    for clear in [id.as_str(), reference.as_str(), "order-77", token.as_str()] {
        assert!(!bytes.contains(clear), "{clear} in the trail");
    }
    let (code, text) = verify(trail.path());
    assert_eq!(code, Some(0), "{text}");
}

/// A path below a regular file: no directory can ever be made there, even as root.
fn unwritable_dir(base: &Path) -> PathBuf {
    let file = base.join("not-a-directory");
    std::fs::write(&file, b"").unwrap();
    file.join("audit")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_closed_with_an_unwritable_trail_refuses_calls_and_fincode_sees_nothing() {
    let sandbox = TestSandbox::start().await;
    let base = tempfile::tempdir().unwrap();
    let sidecar = audited_with_token(&sandbox, &unwritable_dir(base.path()))
        .set("audit.fail_closed", true)
        .start();
    let client = app_client();
    let before = sandbox.counters().requests_total;

    let refused = send(
        &client,
        create_transaction(&sidecar, Some("order-refused"), r#"{"amount":5}"#),
    )
    .await;
    refused.assert_problem(503, "audit_unavailable");
    let fetch = get(&client, &sidecar.url("/transactionmanagement/transactions")).await;
    fetch.assert_problem(503, "audit_unavailable");

    let counters = sandbox.counters();
    assert_eq!(counters.requests_total, before, "FinCode saw a request");
    assert_eq!(counters.transactions_created, 0);
    let metrics = sidecar.scrape().await;
    assert!(metrics.contains("fincode_audit_available 0"), "{metrics}");
    let ready = get(&client, &sidecar.admin_url("/readyz")).await;
    let ready = String::from_utf8_lossy(&ready.body).into_owned();
    assert!(
        ready.contains("audit: the trail cannot be written (requests get 503 audit_unavailable)"),
        "{ready}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_open_with_an_unwritable_trail_proceeds_and_counts_the_loss() {
    let sandbox = TestSandbox::start().await;
    let base = tempfile::tempdir().unwrap();
    let sidecar = audited_with_token(&sandbox, &unwritable_dir(base.path())).start();
    let client = app_client();
    let response = send(
        &client,
        create_transaction(&sidecar, Some("order-open"), r#"{"amount":5}"#),
    )
    .await;
    assert_eq!(response.status, 200);
    let mut lost = 0.0;
    for _ in 0..100 {
        let metrics = sidecar.scrape().await;
        lost = metrics
            .lines()
            .find(|l| l.starts_with("fincode_audit_records_lost_total "))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        if lost >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(lost >= 1.0, "the lost record was not counted");
}

/// Sends create-transaction calls with distinct keys from `workers` tasks until stopped;
/// returns the keys that got a complete 200 response.
async fn load(sidecar: &Sidecar, workers: usize, stop: Arc<Mutex<bool>>) -> Vec<String> {
    let answered = Arc::new(Mutex::new(Vec::new()));
    let url = sidecar.url("/transactionmanagement/create-transaction");
    let mut tasks = Vec::new();
    for worker in 0..workers {
        let (url, answered, stop) = (url.clone(), answered.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let client = app_client();
            for n in 0.. {
                if *stop.lock().unwrap() {
                    return;
                }
                let key = format!("load-{worker}-{n}");
                let request = Request::post(&url)
                    .header("content-type", "application/json")
                    .header("x-idempotency-key", &key)
                    .body(Full::<Bytes>::from(r#"{"amount":1}"#))
                    .unwrap();
                let Ok(response) = client.request(request).await else {
                    return;
                };
                let status = response.status();
                // Complete only once the whole body arrived.
                if http_body_util::BodyExt::collect(response.into_body())
                    .await
                    .is_ok()
                    && status == 200
                {
                    answered.lock().unwrap().push(key);
                }
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    Arc::try_unwrap(answered).unwrap().into_inner().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_leaves_a_verifiable_trail_with_every_answered_call() {
    let sandbox = TestSandbox::start().await;
    let trail = tempfile::tempdir().unwrap();
    let mut sidecar = audited_with_token(&sandbox, trail.path())
        .set("audit.fail_closed", true)
        .set("log.level", "info")
        .start();

    let stop = Arc::new(Mutex::new(false));
    let killer = {
        let stop = stop.clone();
        let pid = sidecar.pid();
        tokio::spawn(async move {
            // Deliberate: the kill lands mid-traffic, a while into the run.
            tokio::time::sleep(Duration::from_millis(1500)).await;
            Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status()
                .unwrap();
            *stop.lock().unwrap() = true;
        })
    };
    let answered = load(&sidecar, 8, stop).await;
    killer.await.unwrap();
    assert!(
        answered.len() > 20,
        "only {} calls answered",
        answered.len()
    );

    // A crash mid-write leaves a torn last line; make sure there is one to seal.
    let last = std::fs::read_dir(trail.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .max()
        .unwrap();
    let mut bytes = std::fs::read(&last).unwrap();
    bytes.extend_from_slice(br#"{"seq":999999,"prev":"torn"#);
    std::fs::write(&last, bytes).unwrap();

    // Restart on the same trail, then stop cleanly. Ready first: a SIGTERM that lands
    // before the sidecar listens for it (under load, start-up takes a while) ends the
    // process by the default action instead of a clean stop.
    sidecar.restart();
    sidecar.wait_ready(Duration::from_secs(20)).await;
    assert!(sidecar.terminate(Duration::from_secs(15)).await.success());

    let (code, text) = verify(trail.path());
    assert_eq!(code, Some(0), "{text}");
    let records = records(trail.path());
    assert_eq!(
        records.iter().filter(|r| r["kind"] == "recovery").count(),
        1,
        "the torn line was not sealed"
    );
    let recorded: std::collections::HashSet<&str> = http_records(&records)
        .iter()
        .filter_map(|r| r["resources"]["idempotency_key"].as_str())
        .collect();
    let missing: Vec<&String> = answered
        .iter()
        .filter(|key| !recorded.contains(pseudonym(key).as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} answered calls have no record: {missing:?}",
        missing.len(),
        answered.len()
    );
}

const EMAIL: &str = "ops-canary-audit-91b2@merchant.test";
const PASSWORD: &str = "CANARY-audit-pw-6e0c";
const WEBHOOK_SECRET: &str = "CANARY-webhook-secret-audit-3f9a";
const PAN: &str = "4111111111111111";
const CUSTOMER_EMAIL: &str = "jane.canary@example.org";
const CUSTOMER_NAME: &str = "Jane Canaryname";

/// The canary: login mode with a known password, an app call carrying a card number, an
/// email, a name and a customer code, and a webhook about the created transaction. No
/// clear secret or personal value reaches any audit byte, yet `audit find` by the clear
/// reference finds the call and the webhook, and `audit verify` checks the trail against
/// the checkpoints the sidecar logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_canary_no_secret_or_personal_value_in_any_audit_byte_yet_find_works() {
    let sandbox = TestSandbox::with_user(EMAIL, PASSWORD, |_| {}).await;
    let app = support::TestApp::start().await;
    let trail = tempfile::tempdir().unwrap();
    let store = tempfile::tempdir().unwrap();
    let mut sidecar = audited(SidecarBuilder::new(&sandbox), trail.path())
        .login(&sandbox, EMAIL, PASSWORD)
        .webhooks(&app.url(), WEBHOOK_SECRET, &store.path().join("events.db"))
        .set("log.level", "info")
        .start_ready()
        .await;
    let client = app_client();

    let body = format!(
        r#"{{"amount":2500,"cardNumber":"{PAN}","email":"{CUSTOMER_EMAIL}","beneficiaryFullName":"{CUSTOMER_NAME}","customerCode":"CUST-canary-77"}}"#
    );
    let request = Request::post(sidecar.url("/transactionmanagement/create-transaction"))
        .header("content-type", "application/json")
        .header("x-idempotency-key", "canary-order-1")
        .header("password", "CANARY-txn-pin-8812")
        .body(Full::from(body))
        .unwrap();
    let created = send(&client, request).await;
    assert_eq!(created.status, 200, "{:?}", created.body);
    let reference = created.json()["data"]["reference"]
        .as_str()
        .unwrap()
        .to_owned();

    // The delivery's record is written after the app's answer: wait for it to land.
    let paid = fincode_sandbox::transaction_status_event(&reference, "PAID");
    sandbox
        .deliver_and_record(&sidecar, &app, trail.path(), WEBHOOK_SECRET, paid)
        .await;
    assert!(sidecar.terminate(Duration::from_secs(15)).await.success());

    let bytes = all_bytes(trail.path());
    for canary in [
        PASSWORD,
        EMAIL,
        WEBHOOK_SECRET,
        PAN,
        CUSTOMER_EMAIL,
        CUSTOMER_NAME,
        "Jane Beneficiary",
        "CUST-canary-77",
        "CANARY-txn-pin-8812",
        "canary-order-1",
        reference.as_str(),
        SIGNING_SEED,
        HASH_KEY,
    ] {
        assert!(!bytes.contains(canary), "{canary} is in the audit trail");
    }
    let records = records(trail.path());
    let actions: Vec<&str> = records
        .iter()
        .filter_map(|r| r["action"].as_str())
        .collect();
    for action in ["webhook.received", "webhook.delivered"] {
        assert!(actions.contains(&action), "{action} missing: {actions:?}");
    }

    // `audit find` by the clear reference: the call that created it and its webhook.
    let (code, found) = run_binary(
        Command::new(BIN)
            .args(["audit", "find"])
            .arg(trail.path())
            .args(["--reference", &reference])
            .env("FINCODE_REDACT_HASH_KEY", HASH_KEY),
    );
    assert_eq!(code, Some(0), "{found}");
    let found: Vec<Value> = found
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let found_actions: Vec<&str> = found.iter().filter_map(|r| r["action"].as_str()).collect();
    assert!(
        found_actions.contains(&"POST /transactionmanagement/create-transaction"),
        "{found_actions:?}"
    );
    assert!(
        found_actions.contains(&"webhook.received"),
        "{found_actions:?}"
    );

    // Every signed head the sidecar logged is still in the trail.
    let log = trail.path().join("..").join("sidecar.log");
    std::fs::write(&log, sidecar.output()).unwrap();
    let logged = sidecar.output().matches("\"audit checkpoint\"").count();
    assert!(logged >= 1, "no checkpoint was logged");
    let (code, text) = run_binary(
        Command::new(BIN)
            .args(["audit", "verify"])
            .arg(trail.path())
            .args(["--public-key", &public_key()])
            .arg("--checkpoints")
            .arg(&log),
    );
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains(&format!("read {logged} checkpoint(s)")),
        "{text}"
    );
    std::fs::remove_file(&log).unwrap();
}

/// A request body that arrives in several chunks is joined before it is read for ids
/// (only a one-chunk body is kept by reference, `BodyCopy`). FinCode refuses this create
/// (no idempotency key) with an answer that names nothing, so the customer code in the
/// record can only have come from the request's joined chunks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_body_sent_in_chunks_is_read_whole_for_its_ids() {
    let sandbox = TestSandbox::start().await;
    let trail = tempfile::tempdir().unwrap();
    let mut sidecar = audited_with_token(&sandbox, trail.path()).start();
    let body = r#"{"amount":100,"customer_code":"CUST-CHUNKED-42"}"#;
    // Cut inside the code, so that no chunk holds it whole.
    let cut = body.find("CHUNKED").unwrap();
    let chunks = [&body[..cut], &body[cut..cut + 4], &body[cut + 4..]]
        .map(|part| Ok::<_, std::io::Error>(Frame::data(Bytes::from(part))));
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let response = client
        .request(
            Request::post(sidecar.url("/transactionmanagement/create-transaction"))
                .header("content-type", "application/json")
                .body(StreamBody::new(futures_util::stream::iter(chunks)))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    let answer = response.into_body().collect().await.unwrap().to_bytes();
    assert!(
        !String::from_utf8_lossy(&answer).contains("CUST-CHUNKED-42"),
        "the answer must not name the customer, or it could be where the record found it"
    );

    assert!(sidecar.terminate(Duration::from_secs(15)).await.success());
    let records = records(trail.path());
    let calls = http_records(&records);
    assert_eq!(calls.len(), 1, "{calls:#?}");
    assert_eq!(calls[0]["outcome"], "failure");
    assert_eq!(
        calls[0]["resources"]["customer_code"],
        pseudonym("CUST-CHUNKED-42").as_str()
    );
}

/// An audited sidecar before a sandbox that will hold the next call for 800 ms.
async fn audited_before_a_slow_fincode() -> (TestSandbox, tempfile::TempDir, Sidecar) {
    let sandbox = TestSandbox::start().await;
    let trail = tempfile::tempdir().unwrap();
    let sidecar = audited_with_token(&sandbox, trail.path())
        .start_ready()
        .await;
    sandbox.add_fault(fincode_sandbox::FaultRule::latency(Duration::from_millis(800)).times(1));
    (sandbox, trail, sidecar)
}

/// Waits until the sandbox's latency fault holds a call: the call is at FinCode.
async fn held_at_fincode(sandbox: &TestSandbox) {
    support::eventually(
        Duration::from_secs(10),
        "the call held at FinCode",
        async || sandbox.counters().faults_applied.latency >= 1,
    )
    .await;
}

/// Once FinCode's held call has been answered (its latency is 800 ms), stops the sidecar
/// and returns the trail's one app-call record, a create-transaction.
async fn the_one_create_after_fincode_answered(sidecar: &mut Sidecar, trail: &Path) -> Value {
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(sidecar.terminate(Duration::from_secs(15)).await.success());
    let records = records(trail);
    let calls = http_records(&records);
    assert_eq!(calls.len(), 1, "{calls:#?}");
    let call = calls[0].clone();
    assert_eq!(
        call["action"],
        "POST /transactionmanagement/create-transaction"
    );
    call
}

/// An app whose own client gives up while FinCode is still working on a call (it closes
/// the connection) must not take the call's record with it: FinCode may act on the call
/// anyway, so the trail needs it, with FinCode's answer. The sidecar finishes the call
/// (HTTP/1 half-close: a client's EOF mid-call is not a reason to drop it) and records it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_the_app_hangs_up_on_is_still_recorded_with_fincodes_answer() {
    use tokio::io::AsyncWriteExt as _;

    let (sandbox, trail, mut sidecar) = audited_before_a_slow_fincode().await;
    let body =
        r#"{"amount":100,"currency":"NGN","reference":"order-hangup","customer_code":"CUST-7"}"#;
    let request = format!(
        "POST /transactionmanagement/create-transaction HTTP/1.1\r\nhost: sidecar\r\n\
         content-type: application/json\r\nx-idempotency-key: hangup-1\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut app = tokio::net::TcpStream::connect(sidecar.egress_addr())
        .await
        .unwrap();
    app.write_all(request.as_bytes()).await.unwrap();
    held_at_fincode(&sandbox).await;
    // The app gives up: its socket closes while FinCode holds the call.
    drop(app);
    let call = the_one_create_after_fincode_answered(&mut sidecar, trail.path()).await;
    assert_eq!(call["status"], 200, "FinCode's answer: {call:#}");
    assert_eq!(
        call["resources"]["customer_code"],
        pseudonym("CUST-7").as_str()
    );
    // FinCode's answer was read: the transaction it created is named.
    assert!(call["resources"]["transaction_id"].is_string(), "{call:#}");
    assert_eq!(verify(trail.path()).0, Some(0));
}

/// An HTTP/2 app that cancels its call (resets the stream) while FinCode holds it drops the
/// call in the sidecar; its record is still written, of unknown outcome: FinCode may have
/// acted on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_the_app_cancels_over_http2_is_recorded_as_of_unknown_outcome() {
    let (sandbox, trail, mut sidecar) = audited_before_a_slow_fincode().await;
    let request = create_transaction(
        &sidecar,
        Some("cancel-1"),
        r#"{"amount":100,"customer_code":"CUST-8"}"#,
    );
    let call = tokio::spawn(async move { support::app_client_h2c().request(request).await });
    held_at_fincode(&sandbox).await;
    // The app gives up: its stream is reset while FinCode holds the call.
    call.abort();
    let call = the_one_create_after_fincode_answered(&mut sidecar, trail.path()).await;
    assert_eq!(call["outcome"], "unknown", "{call:#}");
    assert_eq!(call["response"], "abandoned", "{call:#}");
    assert!(call.get("status").is_none(), "{call:#}");
    assert_eq!(
        call["resources"]["idempotency_key"],
        pseudonym("cancel-1").as_str()
    );
    assert_eq!(verify(trail.path()).0, Some(0));
}

/// A call still at FinCode when the drain's grace ends is cut with its connection; its
/// record is still in the trail, of unknown outcome, before the trail is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_cut_at_the_drain_deadline_is_recorded_as_of_unknown_outcome() {
    let sandbox = TestSandbox::start().await;
    let trail = tempfile::tempdir().unwrap();
    let mut sidecar = audited_with_token(&sandbox, trail.path())
        .set("shutdown.grace", "1s")
        .start_ready()
        .await;
    sandbox.add_fault(fincode_sandbox::FaultRule::latency(Duration::from_secs(8)).times(1));
    let request = create_transaction(
        &sidecar,
        Some("drain-1"),
        r#"{"amount":100,"customer_code":"CUST-9"}"#,
    );
    let call = tokio::spawn(async move { send(&app_client(), request).await });
    held_at_fincode(&sandbox).await;
    assert!(sidecar.terminate(Duration::from_secs(6)).await.success());
    call.abort();

    let records = records(trail.path());
    let calls = http_records(&records);
    assert_eq!(calls.len(), 1, "{calls:#?}");
    assert_eq!(calls[0]["outcome"], "unknown", "{:#}", calls[0]);
    assert_eq!(calls[0]["response"], "abandoned", "{:#}", calls[0]);
    // The trail was closed after the record: the stop is the last sidecar event.
    let last_sidecar = records
        .iter()
        .rev()
        .find(|r| r["kind"] == "sidecar")
        .unwrap();
    assert_eq!(last_sidecar["action"], "sidecar.stop");
    assert!(last_sidecar["seq"].as_u64() > calls[0]["seq"].as_u64());
    assert_eq!(verify(trail.path()).0, Some(0));
}
