//! `fincode-sidecar preflight` end to end: the real binary against the sandbox over TLS,
//! beside a running sidecar with the same config. A healthy setup passes in every format
//! without a secret in any output; each deliberately broken item fails with its reason.
#![allow(clippy::unwrap_used)]

mod support;

use std::{path::Path, process::Command};

use fincode_sandbox::{DEMO_EMAIL, DEMO_PASSWORD};
use serde_json::Value;
use support::{SIGNING_SECRET, SidecarBuilder, TestSandbox, assert_no_secrets, tokens_seen};

/// Base64 of a fixed 32-byte seed.
const AUDIT_SEED: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const HASH_KEY: &str = "preflight-test-hash-key-0123456789abcdef01234";
const WEBHOOK_SECRET: &str = "preflight-webhook-secret-5f1e2d3c4b5a69788796";

/// The production-like setup: login mode, webhooks into SQLite, the audit trail on.
fn configured(sandbox: &TestSandbox, password: &str, dir: &Path) -> SidecarBuilder {
    SidecarBuilder::new(sandbox)
        .login(sandbox, DEMO_EMAIL, password)
        .webhooks(
            "http://127.0.0.1:9/hooks",
            WEBHOOK_SECRET,
            &dir.join("events.db"),
        )
        .set("audit.enabled", true)
        .set("audit.dir", dir.join("audit").display().to_string())
        .set("audit.signing_key_env", "TEST_AUDIT_SIGNING_KEY")
        .set("audit.checkpoint_interval", "200ms")
        .set("redact.hash_key_env", "TEST_REDACT_HASH_KEY")
        .env("TEST_AUDIT_SIGNING_KEY", AUDIT_SEED)
        .env("TEST_REDACT_HASH_KEY", HASH_KEY)
}

/// Runs the command: exit code, stdout, stderr.
fn run(command: &mut Command) -> (i32, String, String) {
    let output = command.output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Runs `preflight --format json` with `builder`'s config: the exit code and the items.
fn preflight_json(builder: &SidecarBuilder, extra: &[&str]) -> (i32, Vec<Value>, String) {
    let mut args = vec!["preflight", "--format", "json"];
    args.extend_from_slice(extra);
    let (code, stdout, stderr) = run(&mut builder.command(&args));
    let items: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{stdout}\n{stderr}"));
    (code, items.as_array().unwrap().clone(), stdout + &stderr)
}

fn find<'a>(items: &'a [Value], id: &str) -> &'a Value {
    items
        .iter()
        .find(|item| item["id"] == id)
        .unwrap_or_else(|| panic!("no item {id} in {items:#?}"))
}

/// Asserts item `id` has `status` and its reason contains every one of `words`.
fn assert_item(items: &[Value], id: &str, status: &str, words: &[&str]) {
    let item = find(items, id);
    assert_eq!(item["status"], status, "{id}: {item:#}");
    let reason = item["reason"].as_str().unwrap();
    for word in words {
        assert!(reason.contains(word), "{id}: {word:?} not in {reason:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn preflight_passes_beside_a_running_sidecar_in_every_format_without_a_secret() {
    let sandbox = TestSandbox::start().await;
    let dir = tempfile::tempdir().unwrap();
    let sidecar = configured(&sandbox, DEMO_PASSWORD, dir.path()).start();
    sidecar.wait_ready(std::time::Duration::from_secs(10)).await;
    let before = sandbox.counters();
    // Same config and environment, pointed at the running sidecar's (ephemeral) ports.
    let preflight = configured(&sandbox, DEMO_PASSWORD, dir.path())
        .set("listen.admin", sidecar.admin_addr().to_string())
        .set("listen.egress", sidecar.egress_addr().to_string());

    let alerts = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/prometheus/alerts.yaml");
    let (code, items, json_out) = preflight_json(&preflight, &["--alerts", alerts]);
    assert_eq!(code, 0, "{json_out}");
    for item in &items {
        for key in ["id", "section", "item", "status", "reason"] {
            assert!(item[key].is_string(), "{key} in {item}");
        }
        assert_ne!(item["status"], "fail", "{item:#}");
    }
    // Every section of FinCode's checklist is there.
    for section in [
        "Security Review",
        "Error Handling",
        "Webhook Setup",
        "Compliance",
        "Production Credentials",
        "Monitoring & Logging",
        "Launch Day",
    ] {
        assert!(items.iter().any(|i| i["section"] == section), "{section}");
    }
    assert_item(
        &items,
        "security.credentials",
        "pass",
        &["TEST_FINCODE_PASSWORD"],
    );
    assert_item(&items, "security.https", "pass", &[]);
    assert_item(
        &items,
        "security.token",
        "pass",
        &["login", "refresh", "logged out"],
    );
    assert_item(&items, "security.clock_skew", "pass", &["Date"]);
    assert_item(&items, "security.webhook_validation", "pass", &["hmac"]);
    assert_item(&items, "security.error_logging", "pass", &["canary"]);
    assert_item(&items, "errors.network", "pass", &["backoff"]);
    assert_item(&items, "errors.degradation", "pass", &["circuit breaker"]);
    assert_item(&items, "webhooks.idempotency", "pass", &["reachable"]);
    assert_item(
        &items,
        "compliance.record_keeping",
        "pass",
        &["writable", "verifies"],
    );
    assert_item(&items, "monitoring.metrics_endpoint", "pass", &[]);
    assert_item(
        &items,
        "monitoring.success_rate",
        "pass",
        &["fincode_transactions"],
    );
    assert_item(
        &items,
        "alerts.error_rate",
        "pass",
        &["FincodeSidecarHighErrorRate"],
    );
    assert_item(
        &items,
        "alerts.latency",
        "pass",
        &["FincodeSidecarHighLatencyP99"],
    );
    assert_item(
        &items,
        "alerts.webhook_failures",
        "pass",
        &["FincodeWebhookDeliveryFailing"],
    );
    assert_item(
        &items,
        "production.base_url",
        "manual",
        &["expected while testing"],
    );
    assert_item(
        &items,
        "launch.rollback",
        "manual",
        &["kubectl rollout undo"],
    );
    // A login, a refresh and a logout of preflight's own; nothing created at FinCode.
    let after = sandbox.counters();
    assert!(after.logins_ok > before.logins_ok, "{after:?}");
    assert!(after.refreshes_ok > before.refreshes_ok, "{after:?}");
    assert!(after.logouts > before.logouts, "{after:?}");
    assert_eq!(after.transactions_created, before.transactions_created);
    assert!(
        sandbox
            .requests()
            .iter()
            .all(|r| r.method == "GET" || r.method == "PUT"),
        "preflight sent nothing but GET and PUT"
    );
    assert_item(
        &items,
        "monitoring.app_door",
        "pass",
        &["listen.egress", "200"],
    );
    // The running sidecar kept its own session: still ready.
    sidecar.wait_ready(std::time::Duration::from_secs(2)).await;

    let (code, text_out, text_err) = run(&mut preflight.command(&["preflight"]));
    assert_eq!(code, 0, "{text_out}{text_err}");
    assert!(text_out.contains("[PASS  ] Token Security"), "{text_out}");
    assert!(text_out.contains(" fail, "), "{text_out}");

    let (code, md_out, md_err) =
        run(&mut preflight.command(&["preflight", "--format", "markdown"]));
    assert_eq!(code, 0, "{md_out}{md_err}");
    assert!(
        md_out.starts_with("# FinCode integration completion"),
        "{md_out}"
    );
    assert!(
        md_out.contains("| Section | Item | Status | Why |"),
        "{md_out}"
    );
    assert!(md_out.contains("(UTC)"), "{md_out}");
    assert!(md_out.contains("- Config: SHA-256 `"), "{md_out}");
    assert!(md_out.contains("- [ ] **Terms & Conditions"), "{md_out}");
    let rows = md_out.lines().filter(|l| l.starts_with("| ")).count();
    assert_eq!(rows, items.len() + 1, "one row per item plus the header");

    let tokens = tokens_seen(&sandbox);
    let mut secrets = vec![
        DEMO_PASSWORD,
        AUDIT_SEED,
        HASH_KEY,
        WEBHOOK_SECRET,
        SIGNING_SECRET,
    ];
    secrets.extend(tokens.iter().map(String::as_str));
    let all = format!("{json_out}{text_out}{text_err}{md_out}{md_err}");
    assert_no_secrets(&all, &secrets);
}

#[tokio::test(flavor = "multi_thread")]
async fn each_broken_item_fails_with_its_reason() {
    let sandbox = TestSandbox::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("audit")).unwrap();
    // No sidecar runs: every case below also fails the admin port, checked last.
    let base = || configured(&sandbox, DEMO_PASSWORD, dir.path());

    // Wrong password: the live login fails, naming the variables to check.
    let (code, items, out) =
        preflight_json(&configured(&sandbox, "not-the-password", dir.path()), &[]);
    assert_eq!(code, 1, "{out}");
    assert_item(
        &items,
        "security.token",
        "fail",
        &["401", "auth.password_env"],
    );
    // The clock is still read, from FinCode's 401.
    assert_item(&items, "security.clock_skew", "pass", &[]);
    assert_no_secrets(&out, &["not-the-password"]);

    // A credential variable the config names is not set.
    let (code, items, out) = preflight_json(
        &base().set("auth.password_env", "PREFLIGHT_TEST_UNSET_PASSWORD"),
        &[],
    );
    assert_eq!(code, 1, "{out}");
    assert_item(
        &items,
        "security.credentials",
        "fail",
        &["PREFLIGHT_TEST_UNSET_PASSWORD (auth.password_env)"],
    );
    assert_item(
        &items,
        "security.token",
        "fail",
        &["PREFLIGHT_TEST_UNSET_PASSWORD"],
    );

    // A redaction rule that keeps part of a secret.
    let (code, items, out) =
        preflight_json(&base().set("redact.fields.currentPassword", "mask"), &[]);
    assert_eq!(code, 1, "{out}");
    assert_item(
        &items,
        "security.error_logging",
        "fail",
        &["password", "redact.fields.currentPassword", "drop"],
    );

    // An audit directory that cannot be written (its parent is a file: root ignores modes).
    let file = dir.path().join("not-a-directory");
    std::fs::write(&file, b"x").unwrap();
    let (code, items, out) = preflight_json(
        &base().set("audit.dir", file.join("audit").display().to_string()),
        &[],
    );
    assert_eq!(code, 1, "{out}");
    assert_item(
        &items,
        "compliance.record_keeping",
        "fail",
        &["audit.dir", "not writable"],
    );

    // Audit off is a failed "Record Keeping" line, with the fix.
    let (code, items, out) = preflight_json(&base().set("audit.enabled", false), &[]);
    assert_eq!(code, 1, "{out}");
    assert_item(
        &items,
        "compliance.record_keeping",
        "fail",
        &["audit.enabled = true"],
    );

    // FinCode's clock an hour ahead of ours.
    sandbox.set_clock_offset(3600);
    let (code, items, out) = preflight_json(&base(), &[]);
    sandbox.set_clock_offset(0);
    assert_eq!(code, 1, "{out}");
    assert_item(&items, "security.clock_skew", "fail", &["ahead of", "NTP"]);

    // --production with the sandbox's loopback URL.
    let (code, items, out) = preflight_json(&base(), &["--production"]);
    assert_eq!(code, 1, "{out}");
    assert_item(
        &items,
        "production.base_url",
        "fail",
        &["not a production URL", "upstream.base_url"],
    );

    // No sidecar running: the admin port and the metrics items fail.
    assert_item(
        &items,
        "monitoring.metrics_endpoint",
        "fail",
        &["is the sidecar running?"],
    );
    assert_item(
        &items,
        "monitoring.success_rate",
        "fail",
        &["is the sidecar running?"],
    );
    // ...and otherwise the setup is sound: these failures are the only ones.
    let failed: Vec<&str> = items
        .iter()
        .filter(|i| i["status"] == "fail")
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        failed,
        [
            // No sidecar ever ran, so the SQLite store was never created.
            "webhooks.idempotency",
            "production.base_url",
            "monitoring.metrics_endpoint",
            "monitoring.app_door",
            "monitoring.success_rate",
            "monitoring.response_times",
            "monitoring.error_rates",
            "monitoring.webhook_delivery",
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unusable_config_is_exit_2_and_unsigned_webhooks_need_an_allow_list() {
    let sandbox = TestSandbox::start().await;
    let dir = tempfile::tempdir().unwrap();
    // `webhooks.scheme = "none"` without an allow-list cannot even be loaded.
    let builder = configured(&sandbox, DEMO_PASSWORD, dir.path()).set("webhooks.scheme", "none");
    let (code, stdout, stderr) = run(&mut builder.command(&["preflight"]));
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(stderr.contains("webhooks.allow_ips"), "{stderr}");
    // With one, it passes, saying what vouches for events.
    let builder = builder.set("webhooks.allow_ips", vec!["203.0.113.0/24".to_owned()]);
    let (_, items, out) = preflight_json(&builder, &[]);
    assert_item(
        &items,
        "security.webhook_validation",
        "pass",
        &["allow_ips"],
    );
    assert_no_secrets(&out, &[DEMO_PASSWORD, WEBHOOK_SECRET]);
    // Bad usage is 2 as well.
    let (code, _, stderr) = run(&mut builder.command(&["preflight", "--format", "yaml"]));
    assert_eq!(code, 2, "{stderr}");
}
