//! End-to-end: metrics, trace context and log hygiene of the real binary.
#![allow(clippy::unwrap_used)]

mod support;

use std::{collections::HashMap, time::Duration};

use http::Request;
use http_body_util::Full;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use support::*;

/// Parses the integer series (counts, counters) of the OpenMetrics exposition into
/// `series -> value`, series with labels as printed.
fn scrape(text: &str) -> HashMap<String, u64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

#[tokio::test]
async fn metrics_count_the_traffic_sent() {
    metrics_count_the_traffic_sent_with(None).await;
}

/// With the audit trail on, the create-transaction outcome comes from the audit layer's
/// scan of the answer (shared, not repeated): the same counts.
#[tokio::test]
async fn metrics_count_the_traffic_sent_with_the_audit_trail_on() {
    let trail = tempfile::tempdir().unwrap();
    metrics_count_the_traffic_sent_with(Some(trail.path())).await;
}

async fn metrics_count_the_traffic_sent_with(audit_dir: Option<&std::path::Path>) {
    let sandbox = TestSandbox::start().await;
    let mut builder = SidecarBuilder::new(&sandbox)
        .login(
            &sandbox,
            fincode_sandbox::DEMO_EMAIL,
            fincode_sandbox::DEMO_PASSWORD,
        )
        .set("limits.max_request_body_bytes", 1024);
    if let Some(dir) = audit_dir {
        builder = builder
            .set("audit.enabled", true)
            .set("audit.dir", dir.display().to_string())
            .set("audit.signing_key_env", "TEST_AUDIT_SIGNING_KEY")
            .set("redact.hash_key_env", "TEST_REDACT_HASH_KEY")
            .env(
                "TEST_AUDIT_SIGNING_KEY",
                "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
            )
            .env(
                "TEST_REDACT_HASH_KEY",
                "observability-test-hash-key-0123456789",
            );
    }
    let sidecar = builder.start_ready().await;
    let app = app_client();

    for _ in 0..7 {
        assert_eq!(
            get(&app, &sidecar.url("/transactionmanagement/transactions"))
                .await
                .status,
            200
        );
    }
    let mut ids = Vec::new();
    for key in ["m-1", "m-2", "m-3"] {
        let created = send(
            &app,
            create_transaction(&sidecar, Some(key), r#"{"amount":5,"currency":"GBP"}"#),
        )
        .await;
        assert_eq!(created.status, 200);
        ids.push(created.json()["data"]["id"].as_str().unwrap().to_owned());
    }
    // A business failure: FinCode refuses a create without an idempotency key (422).
    let refused = send(&app, create_transaction(&sidecar, None, r#"{"amount":5}"#)).await;
    assert_eq!(refused.status, 422);
    for id in &ids {
        let found = get(
            &app,
            &sidecar.url(&format!("/transactionmanagement/transactions/{id}")),
        )
        .await;
        assert_eq!(found.status, 200);
    }
    // A sidecar error.
    let too_big = send(
        &app,
        Request::post(sidecar.url("/sandbox/echo"))
            .body(Full::from(vec![0u8; 2048]))
            .unwrap(),
    )
    .await;
    too_big.assert_problem(413, "body_too_large");

    let metrics = get(&app, &sidecar.admin_url("/metrics")).await;
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .header("content-type")
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = String::from_utf8(metrics.body.to_vec()).unwrap();
    let series = scrape(&text);
    let value = |s: &str| {
        *series
            .get(s)
            .unwrap_or_else(|| panic!("missing {s} in:\n{text}"))
    };
    // (side, method, route, status class, count): every app request has a server
    // observation; every try towards FinCode a client one (the 413 never got there).
    let list = "/transactionmanagement/transactions";
    let create = "/transactionmanagement/create-transaction";
    for (side, method, route, class, count) in [
        ("server", "GET", list, "2xx", 7),
        (
            "server",
            "GET",
            "/transactionmanagement/transactions/{id}",
            "2xx",
            3,
        ),
        ("server", "POST", create, "2xx", 3),
        ("server", "POST", create, "4xx", 1),
        ("server", "POST", "/sandbox/echo", "4xx", 1),
        ("client", "GET", list, "2xx", 7),
        ("client", "POST", create, "2xx", 3),
        ("client", "POST", create, "4xx", 1),
    ] {
        assert_eq!(
            value(&format!(
                r#"http_{side}_request_duration_seconds_count{{method="{method}",route="{route}",status_class="{class}"}}"#
            )),
            count,
            "{side} {method} {route} {class}"
        );
    }
    assert!(
        !series.keys().any(
            |k| k.starts_with("http_client_request_duration_seconds_count")
                && k.contains("/sandbox/echo")
        ),
        "{text}"
    );
    assert_eq!(value(r#"fincode_transactions_total{outcome="success"}"#), 3,);
    assert_eq!(value(r#"fincode_transactions_total{outcome="failure"}"#), 1,);
    assert_eq!(
        value(r#"fincode_sidecar_errors_total{kind="body_too_large"}"#),
        1,
    );
    assert_eq!(value(r#"fincode_logins_total{result="ok"}"#), 1);
    // Bounded labels: no raw ids or paths.
    for id in &ids {
        assert!(
            !text.contains(id.as_str()),
            "transaction id {id} leaked into a label"
        );
    }
    // The histogram has the semconv buckets.
    assert!(
        text.contains(r#"le="0.005""#) && text.contains(r#"le="10.0""#),
        "{text}"
    );
}

#[tokio::test]
async fn fincode_sees_the_trace_context() {
    let sandbox = TestSandbox::start().await;
    let sidecar = SidecarBuilder::new(&sandbox).start();
    let app = app_client();
    send(
        &app,
        Request::get(sidecar.url("/sandbox/ping"))
            .header(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            )
            .header("tracestate", "vendor=abc")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    get(&app, &sidecar.url("/sandbox/ping")).await;
    let seen = sandbox.requests();
    let header = |i: usize, name: &str| {
        seen[i]
            .headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let continued = header(0, "traceparent").unwrap();
    assert!(
        continued.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{continued}"
    );
    assert!(
        !continued.contains("00f067aa0ba902b7"),
        "the sidecar's span is FinCode's parent"
    );
    assert_eq!(header(0, "tracestate").as_deref(), Some("vendor=abc"));
    let started = header(1, "traceparent").unwrap();
    let parts: Vec<&str> = started.split('-').collect();
    assert_eq!(parts.len(), 4, "{started}");
    assert_eq!(
        (parts[0], parts[1].len(), parts[2].len(), parts[3]),
        ("00", 32, 16, "01")
    );
}

#[tokio::test]
async fn every_log_line_is_one_json_object_whatever_the_input() {
    let sandbox = TestSandbox::start().await;
    let mut sidecar = SidecarBuilder::new(&sandbox)
        .set("log.level", "trace")
        .start();
    let forged = r#"{"level":"ERROR","message":"FORGED"}"#;
    let nasty: Vec<Vec<u8>> = vec![
        b"GET /sandbox/ping HTTP/1.1\r\nHost: a\r\nX-Request-ID: a\rb\r\nConnection: close\r\n\r\n".to_vec(),
        format!("GET /sandbox/ping HTTP/1.1\r\nHost: a\r\nUser-Agent: x\r\n {forged}\r\nConnection: close\r\n\r\n").into_bytes(),
        format!("GET /sandbox/echo%0d%0a{forged} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").into_bytes(),
        format!("GET /sandbox/ping HTTP/1.1\r\nHost: a\r\nX-Note: \u{1b}[31m{forged}\r\nConnection: close\r\n\r\n").into_bytes(),
    ];
    for request in &nasty {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(sidecar.egress_addr())
            .await
            .unwrap();
        stream.write_all(request).await.unwrap();
        let mut reply = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut reply)).await;
        assert!(
            reply.starts_with(b"HTTP/1.1 "),
            "{:?}",
            String::from_utf8_lossy(&reply)
        );
    }
    // Every line the process will write about them: it has exited and its output is read.
    assert!(sidecar.terminate(Duration::from_secs(30)).await.success());
    let output = sidecar.output();
    for line in output.lines() {
        let parsed: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {line:?}"));
        assert_ne!(parsed["message"], "FORGED", "a forged line: {line}");
    }
    assert!(output.contains("\"access\""), "access lines were logged");
}

#[tokio::test]
async fn a_line_logged_while_a_request_is_served_carries_its_span() {
    let sandbox = TestSandbox::start().await;
    let route = "/transactionmanagement/transactions";
    let mut sidecar = SidecarBuilder::with_static_token(&sandbox)
        .set("log.level", "debug")
        .set("rate_limit.per_second", 1000)
        .set("rate_limit.max_wait", "0s")
        .route_rate_limit(route, 1, 1)
        .start_ready()
        .await;
    let app = app_client();
    let call = |id: &'static str| {
        send(
            &app,
            Request::get(sidecar.url(route))
                .header("x-request-id", id)
                .body(Full::default())
                .unwrap(),
        )
    };
    assert_eq!(call("span-fields-1").await.status, 200);
    // Refused by the route's rate limit, inside the request: its "sidecar error" line.
    call("span-fields-2")
        .await
        .assert_problem(429, "rate_limited");
    assert!(sidecar.terminate(Duration::from_secs(30)).await.success());
    let output = sidecar.output();
    let line = output
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|line| line["message"] == "sidecar error")
        .unwrap_or_else(|| panic!("no sidecar error line: {output}"));
    assert_eq!(line["error.kind"], "rate_limited", "{line}");
    // The request span's fields, as the JSON span list shows them (the span fields'
    // own formatter, in the real binary).
    let span = &line["spans"][0];
    assert_eq!(span["name"], "request", "{line}");
    assert_eq!(span["correlation_id"], "span-fields-2", "{line}");
    assert_eq!(span["method"], "GET", "{line}");
    assert_eq!(span["route"], route, "{line}");
    assert!(
        span["trace_id"]
            .as_str()
            .is_some_and(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())),
        "{line}"
    );
}

/// The sidecar's config for exporting to `receiver` with a short batch delay.
fn exporting(builder: SidecarBuilder, receiver: &OtlpReceiver) -> SidecarBuilder {
    builder
        .set("traces.otlp_endpoint", receiver.endpoint())
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
}

#[tokio::test]
async fn spans_reach_the_collector_with_semconv_names_kinds_and_links() {
    let receiver = OtlpReceiver::start().await;
    let sandbox = TestSandbox::start().await;
    let sidecar = exporting(
        SidecarBuilder::with_static_token(&sandbox).set("traces.service_name", "checkout-sidecar"),
        &receiver,
    )
    .start();
    let app = app_client();

    // A call the app traced itself, and one it did not.
    let continued = send(
        &app,
        Request::get(sidecar.url("/transactionmanagement/transactions?page=2"))
            .header(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            )
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(continued.status, 200);
    // Every try fails: three CLIENT spans (retry.max_attempts) under one SERVER span.
    sandbox.add_fault(
        fincode_sandbox::FaultRule::status(503)
            .times(3)
            .path_prefix("/sandbox/ping"),
    );
    let failed = get(&app, &sidecar.url("/sandbox/ping")).await;
    assert_eq!(failed.status, 503);
    assert_eq!(failed.header("x-sidecar-attempts"), Some("3"));

    let spans = receiver.wait_for(6, Duration::from_secs(10)).await;
    assert_eq!(spans.len(), 6, "{spans:#?}");
    assert!(spans.iter().all(|s| s.service_name == "checkout-sidecar"));

    let app_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let server = spans
        .iter()
        .find(|s| s.trace_id == app_trace && s.kind == SpanKind::Server)
        .expect("a SERVER span in the app's trace");
    assert_eq!(server.name, "GET /transactionmanagement/transactions");
    assert_eq!(
        server.parent_span_id, "00f067aa0ba902b7",
        "the app's span is the parent"
    );
    assert_eq!(server.attr("http.request.method"), Some("GET"));
    assert_eq!(
        server.attr("http.route"),
        Some("/transactionmanagement/transactions")
    );
    assert_eq!(server.attr("http.response.status_code"), Some("200"));
    assert_eq!(server.attr("error.type"), None);
    assert!(!server.error);

    let client = spans
        .iter()
        .find(|s| s.trace_id == app_trace && s.kind == SpanKind::Client)
        .expect("a CLIENT span in the app's trace");
    assert_eq!(client.name, "GET");
    assert_eq!(
        client.parent_span_id, server.span_id,
        "one try under the app's call"
    );
    assert_eq!(
        client.attr("url.full"),
        Some(
            format!(
                "{}/transactionmanagement/transactions?page=2",
                sandbox.base_url()
            )
            .as_str()
        )
    );
    assert_eq!(client.attr("server.address"), Some("127.0.0.1"));
    assert_eq!(client.attr("http.response.status_code"), Some("200"));
    assert_eq!(client.attr("http.request.resend_count"), None);

    // FinCode's parent is the try's span.
    let seen = sandbox.requests();
    let traceparent = seen[0]
        .headers
        .iter()
        .find(|(k, _)| k == "traceparent")
        .map(|(_, v)| v.clone())
        .unwrap();
    assert_eq!(traceparent, format!("00-{app_trace}-{}-01", client.span_id));

    // The failed call: a new trace, error.type on every span, a resend count per retry.
    let failed: Vec<&ReceivedSpan> = spans.iter().filter(|s| s.trace_id != app_trace).collect();
    assert_eq!(failed.len(), 4, "{failed:#?}");
    let failed_server = failed.iter().find(|s| s.kind == SpanKind::Server).unwrap();
    assert_eq!(failed_server.name, "GET /sandbox/ping");
    assert_eq!(failed_server.parent_span_id, "", "a root span");
    assert_eq!(failed_server.attr("error.type"), Some("503"));
    assert!(failed_server.error);
    let mut resends: Vec<_> = failed
        .iter()
        .filter(|s| s.kind == SpanKind::Client)
        .map(|client| {
            assert_eq!(client.parent_span_id, failed_server.span_id);
            assert_eq!(client.attr("error.type"), Some("503"));
            assert_eq!(client.attr("http.response.status_code"), Some("503"));
            client.attr("http.request.resend_count").map(str::to_owned)
        })
        .collect();
    resends.sort();
    assert_eq!(resends, [None, Some("1".to_owned()), Some("2".to_owned())]);
}

#[tokio::test]
async fn a_replayed_try_carries_its_resend_count_and_a_sidecar_error_its_kind() {
    let receiver = OtlpReceiver::start().await;
    let sandbox = TestSandbox::start().await;
    let sidecar = exporting(
        SidecarBuilder::new(&sandbox)
            .login(
                &sandbox,
                fincode_sandbox::DEMO_EMAIL,
                fincode_sandbox::DEMO_PASSWORD,
            )
            // A 401 on a token seconds old renews it only with this (default 10 s).
            .set("auth.renew_on_401_min_age", "0s"),
        &receiver,
    )
    .start_ready()
    .await;
    let app = app_client();

    // FinCode forgets the token: the GET gets a 401, the sidecar renews and replays it.
    sandbox.expire_access_tokens();
    let replayed = get(&app, &sidecar.url("/transactionmanagement/transactions")).await;
    assert_eq!(replayed.status, 200);

    let spans = receiver.wait_for(3, Duration::from_secs(10)).await;
    let server = spans
        .iter()
        .find(|s| s.kind == SpanKind::Server)
        .expect("the app's call");
    let mut tries: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Client && s.trace_id == server.trace_id)
        .collect();
    tries.sort_by_key(|s| {
        s.attr("http.request.resend_count")
            .unwrap_or("0")
            .to_owned()
    });
    assert_eq!(tries.len(), 2, "{spans:#?}");
    assert_eq!(tries[0].attr("http.response.status_code"), Some("401"));
    assert_eq!(tries[0].attr("error.type"), Some("401"));
    assert_eq!(tries[1].attr("http.request.resend_count"), Some("1"));
    assert_eq!(tries[1].attr("http.response.status_code"), Some("200"));
    assert!(tries.iter().all(|t| t.parent_span_id == server.span_id));
    assert_ne!(tries[0].span_id, tries[1].span_id);

    // A try that never got an answer: error.type is the sidecar's kind.
    sandbox.add_fault(fincode_sandbox::FaultRule::reset().path_prefix("/sandbox/ping"));
    let reset = get(&app, &sidecar.url("/sandbox/ping")).await;
    assert_eq!(reset.status, 502);
    assert_eq!(reset.header("x-sidecar-attempts"), Some("3"));
    assert_eq!(
        reset.header("x-sidecar-retry-stopped"),
        Some("max_attempts")
    );
    let spans = receiver.wait_for(7, Duration::from_secs(10)).await;
    let unreachable: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|s| s.attr("error.type") == Some("upstream_unreachable"))
        .collect();
    assert_eq!(
        unreachable.len(),
        4,
        "the server span and one client span per try: {spans:#?}"
    );
}

/// A try the retry layer's per-try bound ended (its future dropped, FinCode still silent)
/// is a CLIENT span and a client duration all the same: the slowest tries are the ones
/// an operator must see.
#[tokio::test]
async fn a_try_ended_by_the_per_try_timeout_is_still_a_span_and_a_duration() {
    let receiver = OtlpReceiver::start().await;
    let sandbox = TestSandbox::start().await;
    let sidecar = exporting(
        SidecarBuilder::with_static_token(&sandbox)
            .set("retry.per_try_timeout", "300ms")
            .set("retry.max_attempts", 2),
        &receiver,
    )
    .start_ready()
    .await;
    let app = app_client();
    sandbox.add_fault(
        fincode_sandbox::FaultRule::latency(Duration::from_secs(3))
            .times(2)
            .path_prefix("/sandbox/ping"),
    );
    let slow = get(&app, &sidecar.url("/sandbox/ping")).await;
    slow.assert_problem(504, "upstream_timeout");
    assert_eq!(slow.header("x-sidecar-attempts"), Some("2"));

    let spans = receiver.wait_for(3, Duration::from_secs(10)).await;
    let server = spans
        .iter()
        .find(|s| s.kind == SpanKind::Server)
        .expect("the app's call");
    assert_eq!(server.attr("error.type"), Some("upstream_timeout"));
    let tries: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Client && s.trace_id == server.trace_id)
        .collect();
    assert_eq!(tries.len(), 2, "one CLIENT span per try: {spans:#?}");
    for try_ in &tries {
        assert_eq!(try_.parent_span_id, server.span_id);
        assert_eq!(try_.attr("error.type"), Some("cancelled"));
        assert_eq!(try_.attr("http.response.status_code"), None);
        assert!(try_.error);
    }

    let metrics = get(&app, &sidecar.admin_url("/metrics")).await;
    let text = String::from_utf8(metrics.body.to_vec()).unwrap();
    let unanswered: u64 = scrape(&text)
        .iter()
        .filter(|(series, _)| {
            series.starts_with("http_client_request_duration_seconds_count{")
                && series.contains(r#"status_class="error""#)
        })
        .map(|(_, count)| count)
        .sum();
    assert_eq!(unanswered, 2, "{text}");
}

#[tokio::test]
async fn access_lines_follow_the_live_level_and_the_last_ones_survive_shutdown() {
    let sandbox = TestSandbox::start().await;
    let config = |level: &str| SidecarBuilder::new(&sandbox).set("log.level", level);
    let mut sidecar = config("info,fincode_sidecar::access=off")
        .start_ready()
        .await;
    let app = app_client();
    let ping = |id: String| {
        send(
            &app,
            Request::get(sidecar.url("/sandbox/ping"))
                .header("x-request-id", id)
                .body(Full::default())
                .unwrap(),
        )
    };
    let access_ids = |output: &str| -> Vec<String> {
        output
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|line| line["target"] == "fincode_sidecar::access")
            .map(|line| {
                line["spans"][0]["correlation_id"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    };
    assert_eq!(ping("quiet-1".into()).await.status, 200);

    // The level is raised by a reload: access lines start without a restart.
    std::fs::write(sidecar.config_path(), config("info").to_toml()).unwrap();
    sidecar.signal("HUP");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let mut n = 0;
    while access_ids(&sidecar.output()).is_empty() {
        assert!(std::time::Instant::now() < deadline, "{}", sidecar.output());
        n += 1;
        assert_eq!(ping(format!("probe-{n}")).await.status, 200);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!access_ids(&sidecar.output()).contains(&"quiet-1".to_owned()));

    // A burst, then SIGTERM at once: every line is written before the process exits.
    for i in 0..50 {
        assert_eq!(ping(format!("burst-{i}")).await.status, 200);
    }
    let metrics = sidecar.scrape().await;
    assert!(
        metrics.contains("fincode_access_log_dropped_total 0"),
        "{metrics}"
    );
    // Returns once the process has exited and all it wrote has been read.
    assert!(sidecar.terminate(Duration::from_secs(30)).await.success());
    let logged = access_ids(&sidecar.output());
    for i in 0..50 {
        let id = format!("burst-{i}");
        assert!(logged.contains(&id), "no access line for {id}");
    }
}
