use super::*;

/// Asserts that the rendered `text` holds `series`, showing all of it when it does not.
#[track_caller]
fn assert_has(text: &str, series: &str) {
    assert!(text.contains(series), "{series} in {text}");
}

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
    assert_has(
        &text,
        r#"http_server_request_duration_seconds_count{method="POST",route="/transactionmanagement/create-transaction",status_class="2xx"} 2"#,
    );
    assert_has(&text, r#"le="0.025""#);
    assert_has(
        &text,
        r#"fincode_sidecar_errors_total{kind="upstream_timeout"} 1"#,
    );
    assert_has(&text, r#"fincode_transactions_total{outcome="success"} 1"#);
    assert!(text.ends_with("# EOF\n"));
    // Known label values exist before their first event, so alerts see the first one.
    for series in [
        r#"fincode_transactions_total{outcome="failure"} 0"#,
        r#"fincode_token_refreshes_total{result="failed"} 0"#,
        r#"fincode_logins_total{result="ok"} 0"#,
    ] {
        assert_has(&text, series);
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
        assert_has(&text, &series);
    }
    metrics.http.login_rejected(Some("bad_credentials"));
    metrics.http.login_rejected(Some("locked"));
    let text = metrics.render();
    assert_has(&text, r#"fincode_login_rejected{reason="locked"} 1"#);
    assert_has(
        &text,
        r#"fincode_login_rejected{reason="bad_credentials"} 0"#,
    );
    metrics.http.login_rejected(None);
    assert!(
        metrics
            .render()
            .contains(r#"fincode_login_rejected{reason="locked"} 0"#)
    );
}

#[test]
fn the_token_schedule_is_zero_until_known_then_unix_seconds() {
    let metrics = Metrics::new();
    let text = metrics.render();
    assert_has(&text, "fincode_token_expiry_timestamp_seconds 0\n");
    assert_has(&text, "fincode_token_refresh_timestamp_seconds 0\n");
    let at = |secs| std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    metrics
        .http
        .token_schedule(Some(at(1_800_003_600)), at(1_800_003_300));
    let text = metrics.render();
    assert_has(&text, "fincode_token_expiry_timestamp_seconds 1800003600\n");
    assert_has(
        &text,
        "fincode_token_refresh_timestamp_seconds 1800003300\n",
    );
    // No token yet (the first login failing): the expiry is unknown again.
    metrics.http.token_schedule(None, at(1_800_000_002));
    assert!(
        metrics
            .render()
            .contains("fincode_token_expiry_timestamp_seconds 0\n")
    );
}

/// The per-thread series cache: each registry counts only its own observations, the
/// same label text at another address is the same series, and more label sets than the
/// cache holds are all counted.
#[test]
fn durations_land_in_their_own_family_and_series_whatever_the_cache_holds() {
    let count = |text: &str, route: &str| -> u64 {
        let prefix = format!(
            r#"http_client_request_duration_seconds_count{{method="GET",route="{route}",status_class="2xx"}} "#
        );
        text.lines()
            .find_map(|line| line.strip_prefix(prefix.as_str()))
            .map_or(0, |n| n.parse().unwrap())
    };
    let labels = |route: &'static str| HttpLabels {
        method: "GET",
        route,
        status_class: "2xx",
    };
    let (first, second) = (Metrics::new(), Metrics::new());
    first.http.observe_client(&labels("/a"), 0.1);
    second.http.observe_client(&labels("/a"), 0.1);
    second.http.observe_client(&labels("/a"), 0.1);
    // The same text at another address.
    let copy: &'static str = Box::leak(String::from("/a").into_boxed_str());
    first.http.observe_client(&labels(copy), 0.1);
    // Twice the cache's size of distinct routes, then "/a" again.
    let routes: Vec<&'static str> = (0..128)
        .map(|n| &*Box::leak(format!("/r{n}").into_boxed_str()))
        .collect();
    for route in &routes {
        first.http.observe_client(&labels(route), 0.1);
    }
    first.http.observe_client(&labels("/a"), 0.1);
    let (first, second) = (first.render(), second.render());
    assert_eq!(count(&first, "/a"), 3);
    assert_eq!(count(&second, "/a"), 2);
    assert!(routes.iter().all(|route| count(&first, route) == 1));
    assert_eq!(count(&second, "/r5"), 0);
}
