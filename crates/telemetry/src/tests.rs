use super::*;

#[test]
fn renders_observations_with_bounded_labels() {
    let metrics = Metrics::new();
    let labels = HttpLabels {
        method: "POST",
        route: "/transactionmanagement/create-transaction",
        status_class: status_class(201),
    };
    metrics.http.observe_server(&labels, 0.02);
    metrics.http.observe_server(&labels, 4.0);
    metrics.http.sidecar_error("upstream_timeout");
    metrics.http.transaction(true);
    let text = metrics.render();
    assert!(text.contains(
        r#"http_server_request_duration_seconds_count{method="POST",route="/transactionmanagement/create-transaction",status_class="2xx"} 2"#
    ), "{text}");
    assert!(text.contains(r#"le="0.025""#), "{text}");
    assert!(
        text.contains(r#"fincode_sidecar_errors_total{kind="upstream_timeout"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"fincode_transactions_total{outcome="success"} 1"#),
        "{text}"
    );
    assert!(text.ends_with("# EOF\n"));
    // Known label values exist before their first event, so alerts see the first one.
    for series in [
        r#"fincode_transactions_total{outcome="failure"} 0"#,
        r#"fincode_token_refreshes_total{result="failed"} 0"#,
        r#"fincode_logins_total{result="ok"} 0"#,
    ] {
        assert!(text.contains(series), "{series} in {text}");
    }
}

#[test]
fn status_classes() {
    assert_eq!(status_class(200), "2xx");
    assert_eq!(status_class(404), "4xx");
    assert_eq!(status_class(503), "5xx");
    assert_eq!(status_class(999), "5xx");
}

#[test]
fn login_rejected_is_one_for_the_current_reason_only() {
    let metrics = Metrics::new();
    let text = metrics.render();
    for reason in ["bad_credentials", "locked", "unknown_user"] {
        let series = format!("fincode_login_rejected{{reason=\"{reason}\"}} 0");
        assert!(text.contains(&series), "{series} in {text}");
    }
    metrics.http.login_rejected(Some("bad_credentials"));
    metrics.http.login_rejected(Some("locked"));
    let text = metrics.render();
    assert!(
        text.contains(r#"fincode_login_rejected{reason="locked"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"fincode_login_rejected{reason="bad_credentials"} 0"#),
        "{text}"
    );
    metrics.http.login_rejected(None);
    assert!(
        metrics
            .render()
            .contains(r#"fincode_login_rejected{reason="locked"} 0"#)
    );
}

/// Collects what a subscriber writes, for asserting on log output.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_panic_is_logged_with_its_location_and_never_its_message() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_writer(move || writer.clone())
        .finish();
    install_panic_hook();
    let canary = "4111111111111111-x-auth-token-canary";
    let outcome = tracing::subscriber::with_default(subscriber, || {
        std::panic::catch_unwind(|| panic!("bad header {canary}"))
    });
    let _ = std::panic::take_hook();
    assert!(outcome.is_err());
    let logged = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(logged.contains("panicked"), "{logged}");
    assert!(logged.contains("tests.rs"), "{logged}");
    assert!(!logged.contains(canary), "{logged}");
}

#[test]
fn a_panic_before_logging_is_set_up_still_leaves_its_location_on_stderr() {
    const CHILD: &str = "FINCODE_TELEMETRY_PANIC_CHILD";
    let canary = "4111111111111111-before-logging-canary";
    if std::env::var_os(CHILD).is_some() {
        // In the child: no subscriber anywhere, as in config loading or a one-shot command.
        install_panic_hook();
        panic!("bad value {canary}");
    }
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "tests::a_panic_before_logging_is_set_up_still_leaves_its_location_on_stderr",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "the child should have panicked");
    assert!(
        stderr.contains("fincode-sidecar panicked at") && stderr.contains("tests.rs"),
        "{stderr}"
    );
    assert!(
        !stderr.contains(canary) && !stdout.contains(canary),
        "{stderr}{stdout}"
    );
}
