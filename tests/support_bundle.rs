//! `support-bundle` end to end: the real binary proxies a transaction to the sandbox with
//! the audit trail and webhooks on, FinCode fails some of its calls (resets on every try
//! of one, a 422 on another) and sends its webhook; then `support-bundle` (the binary
//! again, beside the running sidecar) gathers it by transaction id and by correlation id,
//! with every attempt, status and error kind, FinCode's error code, the webhook, and no
//! secret.
#![allow(clippy::unwrap_used)]

mod support;

use std::{path::Path, process::Command};

use fincode_sandbox::FaultRule;
use http::Request;
use http_body_util::Full;
use support::{
    BIN, SidecarBuilder, TestApp, TestSandbox, app_client, assert_no_secrets, get, run_binary,
    send, tokens_seen,
};

const EMAIL: &str = "bundle-merchant@example.test";
const PASSWORD: &str = "Bundle-Passw0rd-never-printed";
const WEBHOOK_SECRET: &str = "bundle-webhook-secret-0123456789abcdef";
const PAN: &str = "4539578763621486";
const SIGNING_SEED: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const HASH_KEY: &str = "bundle-test-hash-key-0123456789abcdef0123456789";

/// `support-bundle` with the sidecar's config and its hash key in the environment.
fn bundle(config: &Path, args: &[&str]) -> (Option<i32>, String) {
    run_binary(
        Command::new(BIN)
            .arg("support-bundle")
            .arg("--config")
            .arg(config)
            .args(args)
            .env("TEST_REDACT_HASH_KEY", HASH_KEY),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_transaction_is_bundled_with_its_attempts_errors_and_webhook_and_no_secret() {
    let sandbox = TestSandbox::with_user(EMAIL, PASSWORD, |_| {}).await;
    let app = TestApp::start().await;
    let trail = tempfile::tempdir().unwrap();
    let store = tempfile::tempdir().unwrap();
    let builder = SidecarBuilder::new(&sandbox)
        .login(&sandbox, EMAIL, PASSWORD)
        .webhooks(&app.url(), WEBHOOK_SECRET, &store.path().join("events.db"))
        .set("audit.enabled", true)
        .set("audit.dir", trail.path().display().to_string())
        .set("audit.signing_key_env", "TEST_AUDIT_SIGNING_KEY")
        .set("redact.hash_key_env", "TEST_REDACT_HASH_KEY")
        .set("retry.max_attempts", 3)
        .set("log.level", "info")
        .env("TEST_AUDIT_SIGNING_KEY", SIGNING_SEED)
        .env("TEST_REDACT_HASH_KEY", HASH_KEY);
    let config = builder.config_path();
    let sidecar = builder.start_ready().await;
    let client = app_client();

    // The transaction is created (with a card number in its body, which must never
    // reach the bundle)...
    let body = format!(r#"{{"amount":2500,"cardNumber":"{PAN}","customerCode":"CUST-b-1"}}"#);
    let created = send(
        &client,
        Request::post(sidecar.url("/transactionmanagement/create-transaction"))
            .header("content-type", "application/json")
            .header("x-idempotency-key", "bundle-order-1")
            .body(Full::from(body))
            .unwrap(),
    )
    .await;
    assert_eq!(created.status, 200, "{:?}", created.body);
    let data = created.json()["data"].clone();
    let id = data["id"].as_str().unwrap().to_owned();
    let reference = data["reference"].as_str().unwrap().to_owned();

    // ...then FinCode resets every try of the status check by id (three attempts, the
    // sidecar answers 502 upstream_unreachable)...
    sandbox.add_fault(
        FaultRule::reset()
            .method("GET")
            .path_prefix(format!("/transactionmanagement/transactions/{id}")),
    );
    let failed = get(
        &client,
        &sidecar.url(&format!("/transactionmanagement/transactions/{id}")),
    )
    .await;
    failed.assert_problem(502, "upstream_unreachable");
    assert_eq!(failed.header("x-sidecar-attempts"), Some("3"));
    let failed_correlation = failed.header("x-request-id").unwrap().to_owned();
    sandbox.clear_faults();

    // ...and answers a check by reference 422 (FinCode's own verdict, passed through).
    sandbox.add_fault(FaultRule::status(422).times(1).method("GET"));
    let declined = get(
        &client,
        &sidecar.url(&format!("/transactionmanagement/transactions/{reference}")),
    )
    .await;
    assert_eq!(declined.status, 422);
    sandbox.clear_faults();

    // FinCode's webhook about it, delivered to the app; the trail is written
    // asynchronously, so wait for the last record (the delivery's).
    let failed = serde_json::json!({
        "eventType": "TRANSACTION_STATUS",
        "Reference": reference,
        "Status": "FAILED",
        "msgCode": "51",
        "transactionId": id,
        "beneficiaryFullName": "Jane Beneficiary",
    });
    sandbox
        .deliver_and_record(&sidecar, &app, trail.path(), WEBHOOK_SECRET, failed)
        .await;

    let mut secrets = vec![PASSWORD, EMAIL, WEBHOOK_SECRET, PAN, HASH_KEY, SIGNING_SEED];
    let tokens = tokens_seen(&sandbox);
    assert!(!tokens.is_empty());
    secrets.extend(tokens.iter().map(String::as_str));

    // By transaction id, beside the running sidecar.
    let (code, text) = bundle(&config, &["--id", &id]);
    assert_eq!(code, Some(0), "{text}");
    assert_no_secrets(&text, &secrets);
    assert!(!text.contains("Jane Beneficiary"), "{text}");
    assert!(text.contains("To: hello@fincode.co.uk"), "{text}");
    assert!(text.contains(&format!("Id given:        {id}")), "{text}");
    assert!(
        text.contains(
            "Matched as:      id in a request path (transaction id or reference), transaction id\n"
        ),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "Reference:       {reference} (from FinCode's webhook)"
        )),
        "{text}"
    );
    // Every call about it, in order, whichever id it used: the create, the failed check
    // by id (three attempts, the sidecar's error kind), the 422 by reference.
    let calls: Vec<&str> = text
        .lines()
        .filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()) && l.contains("  -> "))
        .collect();
    assert_eq!(calls.len(), 3, "{text}");
    assert!(
        calls[0].contains(
            "POST /transactionmanagement/create-transaction  -> 200  success  attempts 1"
        ),
        "{text}"
    );
    assert!(
        calls[1]
            .contains("GET /transactionmanagement/transactions/{id}  -> 502  error  attempts 3"),
        "{text}"
    );
    assert!(
        calls[1].contains("sidecar error upstream_unreachable"),
        "{text}"
    );
    assert!(calls[1].contains(&failed_correlation), "{text}");
    assert!(
        calls[2]
            .contains("GET /transactionmanagement/transactions/{id}  -> 422  failure  attempts 1"),
        "{text}"
    );
    // FinCode's error code from its answer, never its message.
    assert!(
        calls[2].contains("  FinCode code VALIDATION_ERROR"),
        "{text}"
    );
    assert!(!calls[1].contains("FinCode code"), "{text}");
    assert!(!text.contains("fault injected"), "{text}");
    // The webhook, with its delivery state.
    let event = text
        .lines()
        .find(|l| l.trim_start().starts_with("evt_"))
        .unwrap_or_else(|| panic!("no webhook event in:\n{text}"));
    assert!(
        event.contains("TRANSACTION_STATUS  status FAILED"),
        "{text}"
    );
    assert!(event.contains("delivery attempts 1  delivered"), "{text}");
    // The error section and the steps name the failure.
    assert!(
        text.contains("x-sidecar-error: upstream_unreachable), after 3 attempt(s)"),
        "{text}"
    );
    assert!(
        text.contains("FinCode answered 422 (failure, code VALIDATION_ERROR), after 1 attempt(s)"),
        "{text}"
    );
    assert!(
        text.contains("FinCode's answer was 422 (failure, code VALIDATION_ERROR)"),
        "{text}"
    );
    assert!(text.contains("Steps to reproduce"), "{text}");
    assert!(
        text.contains("the sidecar answered 502 itself (upstream_unreachable) after 3 attempt(s)"),
        "{text}"
    );
    assert!(
        text.contains("FinCode sent a TRANSACTION_STATUS webhook"),
        "{text}"
    );
    assert!(text.contains(&failed_correlation), "{text}");

    // By the failed call's correlation id: that call, the transaction's create, and the
    // webhook (linked through the transaction id in the call's path).
    let (code, by_correlation) = bundle(&config, &["--id", &failed_correlation]);
    assert_eq!(code, Some(0), "{by_correlation}");
    assert_no_secrets(&by_correlation, &secrets);
    assert!(
        by_correlation.contains("Matched as:      correlation id"),
        "{by_correlation}"
    );
    assert!(
        by_correlation.contains("-> 502  error  attempts 3  ")
            && by_correlation.contains("sidecar error upstream_unreachable"),
        "{by_correlation}"
    );
    assert!(
        by_correlation.contains("POST /transactionmanagement/create-transaction  -> 200"),
        "{by_correlation}"
    );
    assert!(
        by_correlation.contains("TRANSACTION_STATUS  status FAILED"),
        "{by_correlation}"
    );

    // By the reference, which FinCode support knows the transaction by.
    let (code, by_reference) = bundle(&config, &["--id", &reference]);
    assert_eq!(code, Some(0), "{by_reference}");
    assert!(by_reference.contains("reference"), "{by_reference}");
    assert!(by_reference.contains("-> 422  failure"), "{by_reference}");
    assert!(
        by_reference.contains("FinCode code VALIDATION_ERROR"),
        "{by_reference}"
    );

    // In the trail: the code on the 422's record alone, never the message; and a trail
    // with the field still verifies, chain and signatures.
    let records = support::audit_records(trail.path());
    let coded: Vec<_> = records
        .iter()
        .filter(|r| r.get("fincode_code").is_some())
        .collect();
    assert_eq!(coded.len(), 1, "{records:?}");
    assert_eq!(coded[0]["fincode_code"], "VALIDATION_ERROR");
    assert_eq!(coded[0]["status"], 422);
    let trail_text = serde_json::to_string(&records).unwrap();
    assert!(!trail_text.contains("fault injected"), "{trail_text}");
    let public_key = fincode_audit::Signer::from_base64_seed(SIGNING_SEED)
        .unwrap()
        .public_key_base64();
    let (code, verified) = run_binary(
        Command::new(BIN)
            .args(["audit", "verify"])
            .arg(trail.path())
            .args(["--public-key", &public_key]),
    );
    assert_eq!(code, Some(0), "{verified}");

    // Unknown: exit 1, and so is a window after everything happened.
    let (code, unknown) = bundle(&config, &["--id", "TXN-does-not-exist"]);
    assert_eq!(code, Some(1), "{unknown}");
    assert!(unknown.contains("nothing found"), "{unknown}");
    let (code, later) = bundle(&config, &["--id", &id, "--since", "2999-01-01T00:00:00Z"]);
    assert_eq!(code, Some(1), "{later}");

    // Usage: no id, a bad time.
    let (code, _) = bundle(&config, &["--id", " "]);
    assert_eq!(code, Some(2));
    let (code, text) = bundle(&config, &["--id", &id, "--since", "last tuesday"]);
    assert_eq!(code, Some(2), "{text}");
    // Without the hash key the ids cannot be looked up: said, exit 2.
    let (code, text) = run_binary(
        Command::new(BIN)
            .args(["support-bundle", "--id", &id, "--config"])
            .arg(&config)
            .env_remove("TEST_REDACT_HASH_KEY"),
    );
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("TEST_REDACT_HASH_KEY"), "{text}");
}
