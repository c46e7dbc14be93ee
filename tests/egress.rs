//! End-to-end: the real sidecar binary in front of the FinCode sandbox over real TLS.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use fincode_sandbox::FaultRule;
use http::Request;
use http_body_util::{BodyExt, Full, StreamBody};
use support::*;

const EXCLUDED_FROM_COMPARISON: [&str; 4] =
    ["date", "x-fincode-request-id", "x-request-id", "connection"];

/// A long-lived API token, as a merchant would create in FinCode's dashboard.
fn api_token(sandbox: &TestSandbox) -> String {
    sandbox.mint_static_token(Duration::from_hours(1))
}

#[tokio::test]
async fn get_passes_through_byte_exact() {
    let sandbox = TestSandbox::start().await;
    let token = api_token(&sandbox);
    let sidecar = SidecarBuilder::new(&sandbox).static_token(&token).start();
    let app = app_client();
    let direct = direct_client(&sandbox.ca_cert_path());

    // Make a transaction so the GET has a real body to compare.
    let created = send(
        &direct,
        Request::post(format!(
            "{}/transactionmanagement/create-transaction",
            sandbox.base_url()
        ))
        .header("x-auth-token", &token)
        .header("x-idempotency-key", "k-get-1")
        .header("content-type", "application/json")
        .body(Full::from(r#"{"amount":1250,"currency":"GBP"}"#))
        .unwrap(),
    )
    .await;
    assert_eq!(created.status, 200, "{created:?}");
    let id = created.json()["data"]["id"].as_str().unwrap().to_owned();

    for path in [
        format!("/transactionmanagement/transactions/{id}"),
        "/transactionmanagement/transactions?page=0&size=10".to_owned(),
        "/transactionmanagement/transactions/TXN-404".to_owned(),
    ] {
        let via = get(&app, &sidecar.url(&path)).await;
        let want = send(
            &direct,
            Request::get(format!("{}{path}", sandbox.base_url()))
                .header("x-auth-token", &token)
                .body(Full::default())
                .unwrap(),
        )
        .await;
        assert_eq!(via.status, want.status, "{path}");
        assert_eq!(via.body, want.body, "{path}: body must be byte-exact");
        for (name, value) in &want.headers {
            if EXCLUDED_FROM_COMPARISON.contains(&name.as_str()) {
                continue;
            }
            assert_eq!(via.headers.get(name), Some(value), "{path}: header {name}");
        }
        assert!(via.header("x-request-id").is_some());
    }
}

#[tokio::test]
async fn post_is_forwarded_once_with_the_sidecars_credentials() {
    let sandbox = TestSandbox::start().await;
    let token = api_token(&sandbox);
    let sidecar = SidecarBuilder::new(&sandbox).static_token(&token).start();
    let app = app_client();

    let post = || {
        Request::post(sidecar.url("/transactionmanagement/create-transaction"))
            .header("content-type", "application/json")
            .header("x-idempotency-key", "order-77")
            // The app cannot smuggle its own credentials or connection directives.
            .header("x-auth-token", "app-made-this-up")
            .header("connection", "x-secret-hop")
            .header("x-secret-hop", "1")
            .header("x-request-id", "order-77-attempt-1")
            .body(Full::from(
                r#"{"amount":990,"currency":"NGN","beneficiaryId":"B-9"}"#,
            ))
            .unwrap()
    };
    let first = send(&app, post()).await;
    assert_eq!(first.status, 200, "{first:?}");
    assert_eq!(first.json()["status"], "SUCCESS");
    assert_eq!(first.header("x-request-id"), Some("order-77-attempt-1"));
    let second = send(&app, post()).await;
    assert_eq!(second.body, first.body, "same key, same response bytes");

    let counters = sandbox.counters();
    assert_eq!(counters.side_effects.get("order-77"), Some(&1));
    let seen = sandbox.requests();
    let creates: Vec<_> = seen
        .iter()
        .filter(|r| r.uri.ends_with("/transactionmanagement/create-transaction"))
        .collect();
    assert_eq!(
        creates.len(),
        2,
        "each app POST reaches FinCode exactly once"
    );
    for request in creates {
        let header = |name: &str| {
            request
                .headers
                .iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
                .collect::<Vec<_>>()
        };
        assert_eq!(header("x-auth-token"), vec![token.as_str()]);
        assert_eq!(header("platform"), vec!["fincode"]);
        assert_eq!(header("x-request-id"), vec!["order-77-attempt-1"]);
        assert!(
            header("x-secret-hop").is_empty(),
            "connection-listed header stripped"
        );
        assert!(header("connection").is_empty() || request.version == "HTTP/2.0");
        assert_eq!(
            request.uri,
            "/api/v6/services/transactionmanagement/create-transaction"
        );
    }
}

#[tokio::test]
async fn echo_round_trips_bytes_and_headers_over_http1_and_h2c() {
    let sandbox = TestSandbox::start().await;
    let sidecar = SidecarBuilder::new(&sandbox).start();
    for app in [app_client(), app_client_h2c()] {
        let body = pattern(64 * 1024, 7);
        let response = send(
            &app,
            Request::put(sidecar.url("/sandbox/echo/a/b?x=1&respond_header=X-From-Fincode:yes"))
                .header("content-type", "application/octet-stream")
                .header("x-app-header", "kept")
                .body(Full::from(body.clone()))
                .unwrap(),
        )
        .await;
        assert_eq!(response.status, 200);
        assert_eq!(response.body, Bytes::from(body));
        assert_eq!(response.header("x-echo-method"), Some("PUT"));
        assert_eq!(
            response.header("x-echo-uri"),
            Some("/api/v6/services/sandbox/echo/a/b?x=1&respond_header=X-From-Fincode:yes")
        );
        assert_eq!(response.header("x-from-fincode"), Some("yes"));
        assert_eq!(
            response.header("content-type"),
            Some("application/octet-stream")
        );
    }
    // The upstream connection negotiated HTTP/2 by ALPN.
    assert!(sandbox.requests().iter().all(|r| r.version == "HTTP/2.0"));
}

#[tokio::test]
async fn five_mib_streams_both_ways_and_larger_bodies_get_413() {
    let sandbox = TestSandbox::start().await;
    let sidecar = SidecarBuilder::new(&sandbox).start();
    let app = app_client();

    let big = pattern(5 * 1024 * 1024, 11);
    let response = send(
        &app,
        Request::post(sidecar.url("/sandbox/echo"))
            .body(Full::from(big.clone()))
            .unwrap(),
    )
    .await;
    assert_eq!(response.status, 200);
    assert_eq!(response.body.len(), big.len());
    assert!(response.body == big, "5 MiB body must come back byte-exact");

    // Declared over the 8 MiB limit: refused before anything reaches FinCode. Sent
    // by hand so the test reads the 413 instead of racing the upload against the
    // sidecar closing the connection (which an HTTP client reports as a broken pipe).
    let before = sandbox.counters().requests_total;
    let raw = raw_exchange(
        sidecar.egress_addr(),
        format!(
            "POST /sandbox/echo HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\nxxxx",
            8 * 1024 * 1024 + 1
        )
        .as_bytes(),
    )
    .await;
    assert!(raw.starts_with("HTTP/1.1 413"), "{raw}");
    assert!(raw.contains("x-sidecar-error: body_too_large"), "{raw}");
    assert!(raw.contains("limits.max_request_body_bytes"), "{raw}");
    assert_eq!(
        sandbox.counters().requests_total,
        before,
        "FinCode never saw it"
    );

    // Chunked, no declared length, over the limit: the upload is cut off at the
    // limit, so FinCode never receives it whole and the app never gets a complete
    // echo of it (the echo starts answering before the upload ends).
    let chunks = (0..10).map(|_| {
        Ok::<_, std::io::Error>(hyper::body::Frame::data(Bytes::from(vec![
            b'y';
            1024 * 1024
        ])))
    });
    let body = StreamBody::new(futures_util::stream::iter(chunks));
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let result = client
        .request(
            Request::post(sidecar.url("/sandbox/echo"))
                .body(body)
                .unwrap(),
        )
        .await;
    // A cut connection (Err) is also never a complete answer.
    if let Ok(response) = result {
        let status = response.status();
        let collected = response.into_body().collect().await;
        // Either refused outright, or the echo that had started is cut off:
        // never a response that reads as complete.
        assert!(
            status == 413 || collected.is_err(),
            "an oversized chunked body must not get a complete answer (status {status}, {:?} bytes)",
            collected.map(|c| c.to_bytes().len())
        );
    }
}

#[tokio::test]
async fn oversized_headers_get_431() {
    let sandbox = TestSandbox::start().await;
    let sidecar = SidecarBuilder::new(&sandbox)
        .set("limits.max_request_header_bytes", 4096)
        .start();
    let app = app_client();
    let response = send(
        &app,
        Request::get(sidecar.url("/sandbox/ping"))
            .header("x-big", "v".repeat(5000))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    response.assert_problem(431, "headers_too_large");
    assert_eq!(sandbox.counters().requests_total, 0);
}

#[tokio::test]
async fn upstream_down_gives_502_problem() {
    // Bind then drop: a loopback port with nothing listening.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let sidecar =
        SidecarBuilder::bare(&format!("https://127.0.0.1:{port}/api/v6/services")).start();
    let response = get(
        &app_client(),
        &sidecar.url("/transactionmanagement/transactions"),
    )
    .await;
    let problem = response.assert_problem(502, "upstream_unreachable");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("127.0.0.1:{port}"))
    );
}

#[tokio::test]
async fn slow_upstream_gives_504_problem() {
    let sandbox = TestSandbox::start().await;
    let sidecar = SidecarBuilder::new(&sandbox)
        .set("upstream.request_timeout", "500ms")
        .start();
    sandbox.add_fault(FaultRule::latency(Duration::from_secs(3)));
    let started = Instant::now();
    let response = get(&app_client(), &sidecar.url("/sandbox/ping")).await;
    let problem = response.assert_problem(504, "upstream_timeout");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("upstream.request_timeout")
    );
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "answered at the timeout, not after FinCode"
    );
}

#[tokio::test]
async fn unknown_ca_gives_502_and_never_plain_http() {
    let sandbox = TestSandbox::start().await;
    // No ca_file: the sandbox's private CA is not trusted.
    let sidecar = SidecarBuilder::bare(&sandbox.base_url()).start();
    let response = get(&app_client(), &sidecar.url("/sandbox/ping")).await;
    let problem = response.assert_problem(502, "upstream_tls");
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("upstream.ca_file"), "{detail}");
    assert!(detail.to_lowercase().contains("certificate"), "{detail}");
    let counters = sandbox.counters();
    assert!(counters.tls_handshake_failures >= 1, "{counters:?}");
    assert_eq!(counters.plain_http_attempts, 0, "no fallback to plain HTTP");
    assert_eq!(counters.requests_total, 0);
}

#[tokio::test]
async fn request_ids_are_kept_minted_and_echoed() {
    let sandbox = TestSandbox::start().await;
    let sidecar = SidecarBuilder::new(&sandbox).start();
    let app = app_client();
    let kept = send(
        &app,
        Request::get(sidecar.url("/sandbox/ping"))
            .header("x-request-id", "abc-123")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(kept.header("x-request-id"), Some("abc-123"));
    let replaced = send(
        &app,
        Request::get(sidecar.url("/sandbox/ping"))
            .header("x-request-id", "bad id;")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    let minted = replaced.header("x-request-id").unwrap();
    assert_eq!(uuid_version(minted), Some(7), "{minted}");
    let ids: Vec<String> = sandbox
        .requests()
        .iter()
        .flat_map(|r| {
            r.headers
                .iter()
                .filter(|(k, _)| k == "x-request-id")
                .map(|(_, v)| v.clone())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(
        ids,
        vec!["abc-123".to_owned(), minted.to_owned()],
        "FinCode sees the same ids"
    );
}

fn uuid_version(text: &str) -> Option<u8> {
    let hex: String = text.chars().filter(|c| *c != '-').collect();
    (hex.len() == 32)
        .then(|| u8::from_str_radix(&hex[12..13], 16).ok())
        .flatten()
}

#[tokio::test]
async fn admin_health_and_readiness() {
    let sandbox = TestSandbox::start().await;
    let sidecar = SidecarBuilder::new(&sandbox).start();
    let app = app_client();
    assert_eq!(get(&app, &sidecar.admin_url("/healthz")).await.status, 200);
    assert_eq!(get(&app, &sidecar.admin_url("/readyz")).await.status, 200);
    assert_eq!(get(&app, &sidecar.admin_url("/nope")).await.status, 404);
}

#[tokio::test]
async fn garbage_input_gets_4xx_and_the_sidecar_keeps_serving() {
    let sandbox = TestSandbox::start().await;
    let sidecar = SidecarBuilder::new(&sandbox).start();
    for garbage in [
        &b"\x00\x01\x02 nonsense\r\n\r\n"[..],
        b"GET /x HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n",
        b"GET /../../etc HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    ] {
        let text = raw_exchange(sidecar.egress_addr(), garbage).await;
        assert!(text.starts_with("HTTP/1.1 4"), "{garbage:?} -> {text:?}");
    }
    assert_eq!(
        get(&app_client(), &sidecar.url("/sandbox/ping"))
            .await
            .status,
        200
    );
    assert!(!sidecar.output().contains("panicked"));
}

/// Waits until `calls` requests are held by the sandbox's latency fault: in flight.
async fn in_flight_at_fincode(sandbox: &TestSandbox, calls: u64) {
    eventually(
        Duration::from_secs(10),
        format!("{calls} call(s) held at FinCode"),
        async || sandbox.counters().faults_applied.latency >= calls,
    )
    .await;
}

/// Waits until the sidecar, told to stop, reports not ready (it is draining).
async fn readiness_off(sidecar: &Sidecar) {
    let client = app_client();
    eventually(
        Duration::from_secs(5),
        "readiness off after SIGTERM",
        async || get(&client, &sidecar.admin_url("/readyz")).await.status == 503,
    )
    .await;
}

#[tokio::test]
async fn sigterm_drains_and_exits_cleanly() {
    let sandbox = TestSandbox::start().await;
    let sidecar = SidecarBuilder::new(&sandbox).start();
    sandbox.add_fault(FaultRule::latency(Duration::from_millis(700)).times(1));
    let url = sidecar.url("/sandbox/ping");
    let in_flight = tokio::spawn(async move { get(&app_client(), &url).await.status });
    in_flight_at_fincode(&sandbox, 1).await;
    let mut sidecar = sidecar;
    let status = sidecar.terminate(Duration::from_secs(10)).await;
    assert!(status.success(), "{status:?}");
    assert_eq!(
        in_flight.await.unwrap(),
        200,
        "the in-flight request was drained, not dropped"
    );
}

/// A call slower than `shutdown.grace` is cut when the grace ends: the sidecar exits 0 in
/// about the grace, not the call's time.
#[tokio::test]
async fn shutdown_grace_bounds_the_drain() {
    let sandbox = TestSandbox::start().await;
    let mut sidecar = SidecarBuilder::new(&sandbox)
        .set("shutdown.grace", "1s")
        .start_ready()
        .await;
    sandbox.add_fault(FaultRule::latency(Duration::from_secs(8)).times(1));
    let url = sidecar.url("/sandbox/ping");
    let in_flight = tokio::spawn(async move { get(&app_client(), &url).await.status });
    in_flight_at_fincode(&sandbox, 1).await;
    let started = std::time::Instant::now();
    let status = sidecar.terminate(Duration::from_secs(6)).await;
    let took = started.elapsed();
    assert!(status.success(), "{status:?}");
    assert!(
        took >= Duration::from_millis(900),
        "exited before the grace: {took:?}"
    );
    assert!(
        took < Duration::from_secs(6),
        "the 8 s call held the exit: {took:?}"
    );
    in_flight.abort();
}

/// A second SIGTERM during the drain exits at once, with 130.
#[tokio::test]
async fn a_second_signal_exits_at_once() {
    let sandbox = TestSandbox::start().await;
    let mut sidecar = SidecarBuilder::new(&sandbox).start_ready().await;
    sandbox.add_fault(FaultRule::latency(Duration::from_secs(15)).times(1));
    let url = sidecar.url("/sandbox/ping");
    let in_flight = tokio::spawn(async move { get(&app_client(), &url).await.status });
    in_flight_at_fincode(&sandbox, 1).await;
    sidecar.signal("TERM");
    // Draining the 15 s call (the default grace is 25 s)...
    readiness_off(&sidecar).await;
    // ...until the operator insists.
    let started = std::time::Instant::now();
    let status = sidecar.terminate(Duration::from_secs(3)).await;
    assert_eq!(status.code(), Some(130), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(sidecar.output().contains("second shutdown signal"));
    in_flight.abort();
}

#[tokio::test]
async fn while_draining_the_admin_port_still_answers_and_readiness_is_off() {
    let sandbox = TestSandbox::start().await;
    let sidecar = SidecarBuilder::new(&sandbox).start_ready().await;
    sandbox.add_fault(FaultRule::latency(Duration::from_millis(1500)).times(1));
    let url = sidecar.url("/sandbox/ping");
    let in_flight = tokio::spawn(async move { get(&app_client(), &url).await.status });
    in_flight_at_fincode(&sandbox, 1).await;
    sidecar.signal("TERM");
    readiness_off(&sidecar).await;
    // The egress port is draining its one request; the admin port closes last.
    let health = get(&app_client(), &sidecar.admin_url("/healthz")).await;
    assert_eq!(health.status, 200);
    let ready = get(&app_client(), &sidecar.admin_url("/readyz")).await;
    assert_eq!(ready.status, 503, "readiness fails first on SIGTERM");
    assert_eq!(in_flight.await.unwrap(), 200);
    // Signalled once already: a second TERM would cut the drain short (exit 130).
    let mut sidecar = sidecar;
    assert!(sidecar.wait_exit(Duration::from_secs(10)).await.success());
}

#[tokio::test]
async fn static_token_never_reaches_the_logs() {
    let sandbox = TestSandbox::start().await;
    let token = sandbox.mint_static_token(Duration::from_hours(1));
    let sidecar = SidecarBuilder::new(&sandbox)
        .static_token(&token)
        .set("log.level", "trace")
        .start();
    let app = app_client();
    for _ in 0..3 {
        get(&app, &sidecar.url("/transactionmanagement/transactions")).await;
    }
    // The access line is the last thing written about a request.
    eventually(Duration::from_secs(5), "three access lines", async || {
        sidecar.output().matches("fincode_sidecar::access").count() >= 3
    })
    .await;
    let output = sidecar.output();
    assert!(output.len() > 1000, "trace logging produced output");
    assert!(
        !output.contains(&token),
        "the API token appeared in the sidecar's output"
    );
}

/// `voluntary_ctxt_switches` of each thread of `pid` named `egress-*`, by name.
fn egress_threads(pid: u32) -> std::collections::BTreeMap<String, u64> {
    let mut threads = std::collections::BTreeMap::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let dir = task.unwrap().path();
        let Ok(name) = std::fs::read_to_string(dir.join("comm")) else {
            continue; // the thread ended meanwhile
        };
        let name = name.trim().to_owned();
        if !name.starts_with("egress-") {
            continue;
        }
        let status = std::fs::read_to_string(dir.join("status")).unwrap_or_default();
        let switches = status
            .lines()
            .find_map(|line| line.strip_prefix("voluntary_ctxt_switches:"))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(0);
        threads.insert(name, switches);
    }
    threads
}

#[tokio::test]
async fn connections_are_served_by_a_runtime_per_core_under_one_connection_cap() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sandbox = TestSandbox::start().await;
    let token = api_token(&sandbox);
    let sidecar = SidecarBuilder::new(&sandbox)
        .static_token(&token)
        .env("TOKIO_WORKER_THREADS", "3")
        .set("listeners.egress.max_connections", 4)
        .start_ready()
        .await;
    // The worker threads start beside the port; on a busy machine, a moment after.
    eventually(
        Duration::from_secs(10),
        "three egress threads",
        async || egress_threads(sidecar.pid()).len() >= 3,
    )
    .await;
    let before = egress_threads(sidecar.pid());
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        ["egress-0", "egress-1", "egress-2"],
        "one egress runtime thread per TOKIO_WORKER_THREADS"
    );

    // Six keep-alive connections in turn, each answered and left open: handed out in
    // turn, every worker serves two of them, and each of its threads wakes for them.
    let mut open = Vec::new();
    for i in 0..6 {
        let mut stream = tokio::net::TcpStream::connect(sidecar.egress_addr())
            .await
            .unwrap();
        stream
            .write_all(
                format!(
                    "GET /transactionmanagement/transactions/TXN-404-{i} HTTP/1.1\r\nhost: app\r\n\r\n"
                )
                .as_bytes(),
            )
            .await
            .unwrap();
        let mut head = vec![0; 4096];
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut head))
            .await
            .expect("an answer within 5 s")
            .unwrap();
        let head = String::from_utf8_lossy(&head[..read]);
        assert!(head.starts_with("HTTP/1.1 404"), "connection {i}: {head}");
        open.push(stream);
    }
    let after = egress_threads(sidecar.pid());
    for (name, switches) in &before {
        assert!(
            after[name] > *switches,
            "{name} served none of the connections: {before:?} -> {after:?}"
        );
    }

    // One cap for the port, not one per worker: six connections made, four remain open
    // (the oldest idle ones were closed to make room).
    let metrics = sidecar.scrape().await;
    let connections: u64 = metrics
        .lines()
        .filter(|line| {
            line.starts_with("fincode_listener_connections{") && line.contains("\"egress\"")
        })
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<u64>().ok())
        .sum();
    assert_eq!(connections, 4, "{metrics}");
    drop(open);
}

/// A sidecar runs in every pod, so its resident memory counts once per replica: the
/// process turns transparent huge pages off before it allocates much, or the kernel
/// makes every 2 MiB stretch of the allocator's memory resident at its first touch
/// (8 MiB at start and 20 MiB more under load on this machine, `benches/README.md`).
#[tokio::test]
async fn the_process_runs_without_transparent_huge_pages() {
    let sandbox = TestSandbox::start().await;
    let sidecar = SidecarBuilder::with_static_token(&sandbox)
        .start_ready()
        .await;
    let status = std::fs::read_to_string(format!("/proc/{}/status", sidecar.pid())).unwrap();
    let Some(line) = status.lines().find(|line| line.starts_with("THP_enabled:")) else {
        eprintln!("SKIPPED: this kernel does not report THP_enabled in /proc/<pid>/status");
        return;
    };
    assert_eq!(line.split_whitespace().nth(1), Some("0"), "{line}");
    let huge: u64 = std::fs::read_to_string(format!("/proc/{}/smaps_rollup", sidecar.pid()))
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix("AnonHugePages:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    assert_eq!(huge, 0, "anonymous memory in huge pages: {huge} KiB");
}

/// The sidecar's own connection pool, over real TLS to the sandbox: requests one after
/// another reuse one connection to FinCode, over HTTP/1.1 and over HTTP/2, and with
/// `upstream.pool_max_idle_per_host = 0` every request is a new TLS connection (so the
/// count below does see connections).
#[tokio::test]
async fn requests_reuse_pooled_tls_connections_to_fincode_unless_pooling_is_off() {
    for (http2, max_idle) in [(false, 64), (true, 64), (false, 0)] {
        let sandbox = TestSandbox::start().await;
        let sidecar = SidecarBuilder::new(&sandbox)
            .set("upstream.http2", http2)
            .set("upstream.pool_max_idle_per_host", max_idle)
            .start_ready()
            .await;
        let app = app_client();
        let before = sandbox.counters().connections;
        for _ in 0..20 {
            let response = send(
                &app,
                Request::get(sidecar.url("/sandbox/ping"))
                    .body(Full::default())
                    .unwrap(),
            )
            .await;
            assert_eq!(response.status, 200);
        }
        let made = sandbox.counters().connections - before;
        let version = if http2 { "HTTP/2.0" } else { "HTTP/1.1" };
        assert!(
            sandbox.requests().iter().all(|r| r.version == version),
            "every request went over {version}"
        );
        if max_idle == 0 {
            assert!(
                made >= 20,
                "pooling off: {made} TLS connections for 20 requests"
            );
        } else {
            // One app connection is served by one worker, which keeps one connection
            // (a second only if a request overtook the first connection's going idle).
            assert!(
                made <= 2,
                "http2 = {http2}: {made} TLS connections for 20 requests"
            );
        }
    }
}
