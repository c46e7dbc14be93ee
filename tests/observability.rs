//! End-to-end: metrics, trace context and log hygiene of the real binary.
#![allow(clippy::unwrap_used)]

mod support;

use std::{collections::HashMap, time::Duration};

use http::Request;
use http_body_util::Full;
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
    let sandbox = TestSandbox::start().await;
    let sidecar = SidecarBuilder::new(&sandbox)
        .login(
            &sandbox,
            fincode_sandbox::DEMO_EMAIL,
            fincode_sandbox::DEMO_PASSWORD,
        )
        .set("limits.max_request_body_bytes", 1024)
        .start();
    sidecar.wait_ready(Duration::from_secs(20)).await;
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
    let server = |method: &str, route: &str, class: &str| {
        value(&format!(
            r#"http_server_request_duration_seconds_count{{method="{method}",route="{route}",status_class="{class}"}}"#
        ))
    };
    assert_eq!(
        server("GET", "/transactionmanagement/transactions", "2xx"),
        7,
    );
    assert_eq!(
        server("GET", "/transactionmanagement/transactions/{id}", "2xx"),
        3,
    );
    assert_eq!(
        server("POST", "/transactionmanagement/create-transaction", "2xx"),
        3,
    );
    assert_eq!(
        server("POST", "/transactionmanagement/create-transaction", "4xx"),
        1,
    );
    assert_eq!(server("POST", "/sandbox/echo", "4xx"), 1);
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
    let sidecar = SidecarBuilder::new(&sandbox)
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
        let mut stream = tokio::net::TcpStream::connect(sidecar.egress)
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
    tokio::time::sleep(Duration::from_millis(200)).await;
    let output = sidecar.output();
    for line in output.lines() {
        let parsed: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {line:?}"));
        assert_ne!(parsed["message"], "FORGED", "a forged line: {line}");
    }
    assert!(output.contains("\"access\""), "access lines were logged");
}
