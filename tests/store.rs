//! End-to-end `store status`: the real binary reads the queue of a real sidecar's SQLite
//! store while that sidecar runs (and after it stops), and says clearly what is wrong when
//! it cannot.
#![allow(clippy::unwrap_used)]

mod store_status;
mod support;

use std::{path::Path, process::Command, time::Duration};

use fincode_sandbox::{SendWebhooks, transaction_status_event};
use store_status::{assert_three_pending_one_delivered, store_status, text};
use support::*;

const SECRET: &str = "fincode-webhook-secret-for-tests";
const BASE_URL: &str = "https://acme.fincode.tech/api/v6/services";

/// Sends `references` as signed FinCode events; asserts each is acknowledged.
async fn send(sandbox: &TestSandbox, sidecar: &Sidecar, references: &[&str]) {
    let sent = sandbox
        .send_webhooks(SendWebhooks {
            url: sidecar.webhook_url("/webhooks/fincode"),
            signing: hmac_signing(SECRET),
            events: references
                .iter()
                .map(|r| transaction_status_event(r, "PAID"))
                .collect(),
            concurrency: 4,
            ..SendWebhooks::default()
        })
        .await;
    assert!(
        sent.iter().all(|s| s.status == Some(200)),
        "not all acknowledged: {sent:?}"
    );
}

#[tokio::test]
async fn store_status_reads_the_queue_of_a_running_sidecar_then_of_a_stopped_one() {
    let sandbox = TestSandbox::start().await;
    let app = TestApp::start().await;
    let dir = tempfile::tempdir().unwrap();
    // Failed deliveries wait up to an hour before the next attempt: what the app does not
    // take stays pending for the whole test.
    let builder = SidecarBuilder::with_static_token(&sandbox)
        .webhooks(&app.url(), SECRET, &dir.path().join("events.db"))
        .set("webhooks.backoff_base", "1h")
        .set("webhooks.backoff_cap", "1h");
    let config = builder.config_path();
    let mut sidecar = builder.start_ready().await;

    // One event delivered while the app is up; three left pending once it is down.
    send(&sandbox, &sidecar, &["PCN0000000001"]).await;
    app.wait_for(1, Duration::from_secs(10)).await;
    app.answer(503);
    send(
        &sandbox,
        &sidecar,
        &["PCN0000000002", "PCN0000000003", "PCN0000000004"],
    )
    .await;
    // Deliberate: the oldest pending event must be over a second old, as its age is shown.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // While the sidecar runs (and holds its store's lock).
    let age = assert_three_pending_one_delivered(&config, "sqlite", "events.db", 1.0..120.0);

    // Reading it disturbed nothing: the sidecar is ready and still stores events.
    sidecar.wait_ready(Duration::from_secs(5)).await;
    send(&sandbox, &sidecar, &["PCN0000000005"]).await;
    let output = store_status(&config, &["--json"], &[]);
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["pending"], 4, "{json}");
    // The oldest pending event is still the same one, so it only got older.
    assert!(json["oldest_pending_age_seconds"].as_f64().unwrap() >= age);

    // With the sidecar stopped, when operators most want to look.
    let status = sidecar.terminate(Duration::from_secs(30)).await;
    assert!(status.success(), "{}", sidecar.output());
    let output = store_status(&config, &["--json"], &[]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        (&json["pending"], &json["dead"], &json["delivered"]),
        (&4.into(), &0.into(), &1.into()),
        "{json}"
    );
}

/// A config file with `[store]` set to `store`, beside nothing else.
fn config_with_store(dir: &Path, store: &str) -> std::path::PathBuf {
    let path = dir.join("config.toml");
    std::fs::write(
        &path,
        format!("[upstream]\nbase_url = \"{BASE_URL}\"\n[store]\n{store}\n"),
    )
    .unwrap();
    path
}

#[test]
fn store_status_names_what_is_wrong_with_the_exit_code_to_match() {
    let dir = tempfile::tempdir().unwrap();

    // A store that does not exist: a runtime failure (1), and nothing created.
    let missing = dir.path().join("nowhere.db");
    let config = config_with_store(
        dir.path(),
        &format!("sqlite_path = {:?}", missing.display().to_string()),
    );
    let output = store_status(&config, &[], &[]);
    let shown = text(&output);
    assert_eq!(output.status.code(), Some(1), "{shown}");
    assert!(
        shown.contains("nowhere.db") && shown.contains("no such file"),
        "{shown}"
    );
    assert!(!missing.exists());

    // An invalid config: 2, with the key and the fix.
    let canary = "CANARY-pg-pass-7f3a";
    let config = config_with_store(
        dir.path(),
        &format!("url = \"postgres://sidecar:{canary}@db.internal/payments\""),
    );
    let output = store_status(&config, &[], &[]);
    let shown = text(&output);
    assert_eq!(output.status.code(), Some(2), "{shown}");
    assert!(shown.contains("store.url"), "{shown}");
    assert!(shown.contains("store.password_env"), "{shown}");
    assert_no_secrets(&shown, &[canary]);

    // The password variable unset: 2, naming it (its value is never shown).
    let config = config_with_store(
        dir.path(),
        "url = \"postgres://sidecar@127.0.0.1/payments\"\npassword_env = \"TEST_STORE_PASSWORD\"",
    );
    let output = store_status(&config, &[], &[]);
    let shown = text(&output);
    assert_eq!(output.status.code(), Some(2), "{shown}");
    assert!(
        shown.contains("TEST_STORE_PASSWORD (named by store.password_env) is not set"),
        "{shown}"
    );

    // A Postgres it cannot reach as configured (here: verify-full against a server whose
    // certificate does not name 127.0.0.1, or no server at all): a clear runtime
    // failure, no secret shown.
    let output = store_status(&config, &["--json"], &[("TEST_STORE_PASSWORD", canary)]);
    let shown = text(&output);
    assert_eq!(output.status.code(), Some(1), "{shown}");
    assert!(shown.contains("cannot connect"), "{shown}");
    assert!(output.stdout.is_empty(), "{shown}");
    assert_no_secrets(&shown, &[canary]);

    // Usage errors are 2, as for every command.
    let output = Command::new(BIN)
        .args(["store", "status", "--jsn"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
}
