//! End-to-end: egress hygiene. What the app puts in a request can change which headers
//! and which path reach FinCode only in the ways the sidecar allows: a `Connection`
//! header cannot take away the idempotency key or the credential, the app cannot log the
//! sidecar out, a blank idempotency key does not make a payment retryable, a stalled
//! upload is not blamed on FinCode, and a path cannot be spelled (slashes, letter case)
//! so that it escapes its route's rate limit or the base URL.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use fincode_sandbox::{DEMO_EMAIL, DEMO_PASSWORD, FaultRule, SeenRequest};
use http::Request;
use http_body_util::Full;
use support::*;

/// A static-token sidecar whose retries wait 10 to 50 ms, not seconds.
fn quick_retries(sandbox: &TestSandbox) -> SidecarBuilder {
    SidecarBuilder::with_static_token(sandbox)
        .set("retry.backoff_base", "10ms")
        .set("retry.backoff_cap", "50ms")
}

/// A sandbox, and a ready sidecar in static-token mode in front of it.
async fn static_sidecar() -> (TestSandbox, Sidecar) {
    let sandbox = TestSandbox::start().await;
    let sidecar = SidecarBuilder::with_static_token(&sandbox)
        .start_ready()
        .await;
    (sandbox, sidecar)
}

const CREATE: &str = "/transactionmanagement/create-transaction";
const TRANSACTIONS: &str = "/transactionmanagement/transactions";

/// Every value of header `name` in a request the sandbox saw.
fn header<'a>(request: &'a SeenRequest, name: &str) -> Vec<&'a str> {
    request
        .headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

fn seen(sandbox: &TestSandbox, path_suffix: &str) -> Vec<SeenRequest> {
    sandbox
        .requests()
        .into_iter()
        .filter(|r| r.uri.ends_with(path_suffix))
        .collect()
}

/// A1: a keyed POST whose `Connection` header names the idempotency key, through
/// 503, 503, 200. The retry layer decided the POST was safe to repeat because it carried
/// a key; FinCode must see that key on every try, or each try is a new payment.
#[tokio::test]
async fn a_connection_header_cannot_strip_the_idempotency_key() {
    let sandbox = TestSandbox::start().await;
    let sidecar = quick_retries(&sandbox).start_ready().await;
    sandbox.add_fault(FaultRule::status(503).times(2).path_prefix(CREATE));

    let request = Request::post(sidecar.url(CREATE))
        .header("content-type", "application/json")
        .header("connection", "keep-alive, X-Idempotency-Key, x-private")
        .header("x-idempotency-key", "order-conn-1")
        .header("x-private", "hop")
        .body(Full::from(r#"{"amount":1200,"currency":"GBP"}"#))
        .unwrap();
    let response = send(&app_client(), request).await;
    assert_eq!(
        response.status,
        200,
        "{:?}",
        String::from_utf8_lossy(&response.body)
    );
    assert_eq!(response.header("x-sidecar-attempts"), Some("3"));

    let tries = seen(&sandbox, CREATE);
    assert_eq!(tries.len(), 3, "503, 503, 200");
    for request in &tries {
        assert_eq!(header(request, "x-idempotency-key"), vec!["order-conn-1"]);
        assert!(
            header(request, "x-private").is_empty(),
            "a header the sidecar does not manage, named in Connection, is hop-by-hop"
        );
        assert!(header(request, "connection").is_empty() || request.version == "HTTP/2.0");
    }
    let counters = sandbox.counters();
    assert_eq!(counters.transactions_created, 1);
    assert_eq!(counters.side_effects.get("order-conn-1"), Some(&1));
}

/// A blank `X-Idempotency-Key` (an unset template variable in the app) is no key: FinCode
/// would treat it as none, so each try would be a new payment. Through 503, 503 the
/// sidecar sends the POST once and the app gets FinCode's 503 with
/// `x-sidecar-retry-stopped: not_idempotent`.
#[tokio::test]
async fn a_blank_idempotency_key_does_not_make_a_post_retryable() {
    let sandbox = TestSandbox::start().await;
    let sidecar = quick_retries(&sandbox).start_ready().await;
    sandbox.add_fault(FaultRule::status(503).times(2).path_prefix(CREATE));

    for blank in ["", "   "] {
        let response = send(
            &app_client(),
            create_transaction(&sidecar, Some(blank), r#"{"amount":700,"currency":"GBP"}"#),
        )
        .await;
        assert_eq!(response.status, 503, "{blank:?}: {response:?}");
        assert_eq!(
            response.header("x-sidecar-attempts"),
            Some("1"),
            "{blank:?}"
        );
        assert_eq!(
            response.header("x-sidecar-retry-stopped"),
            Some("not_idempotent"),
            "{blank:?}"
        );
    }
    assert_eq!(seen(&sandbox, CREATE).len(), 2, "one try per app request");
}

/// With `retry.mint_idempotency_key`, a blank key is replaced by a minted one, as a
/// missing key is: FinCode sees the same minted key on every try, and the app gets it.
#[tokio::test]
async fn a_blank_idempotency_key_is_replaced_by_a_minted_one() {
    let sandbox = TestSandbox::start().await;
    let sidecar = quick_retries(&sandbox)
        .set("retry.mint_idempotency_key", true)
        .start_ready()
        .await;
    sandbox.add_fault(FaultRule::status(503).times(2).path_prefix(CREATE));

    let response = send(
        &app_client(),
        create_transaction(&sidecar, Some(""), r#"{"amount":800,"currency":"GBP"}"#),
    )
    .await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.header("x-sidecar-attempts"), Some("3"));
    let minted = response.header("x-idempotency-key").unwrap().to_owned();
    assert!(!minted.trim().is_empty());
    let tries = seen(&sandbox, CREATE);
    assert_eq!(tries.len(), 3, "503, 503, 200");
    for request in &tries {
        assert_eq!(header(request, "x-idempotency-key"), vec![minted.as_str()]);
    }
    let counters = sandbox.counters();
    assert_eq!(counters.transactions_created, 1);
    assert_eq!(counters.side_effects.get(&minted), Some(&1));
}

/// A1: `Connection` naming the credential (and the other headers the sidecar manages)
/// removes none of them, in static and in login mode.
#[tokio::test]
async fn a_connection_header_cannot_strip_the_credential_or_managed_headers() {
    let sandbox = TestSandbox::start().await;
    let token = sandbox.mint_static_token(Duration::from_hours(1));
    let static_mode = SidecarBuilder::new(&sandbox).static_token(&token).start();
    let login_mode = SidecarBuilder::new(&sandbox)
        .login(&sandbox, DEMO_EMAIL, DEMO_PASSWORD)
        .start();
    for sidecar in [&static_mode, &login_mode] {
        sidecar.wait_ready(Duration::from_secs(20)).await;
    }
    let app = app_client();
    for (mode, sidecar) in [("static", &static_mode), ("login", &login_mode)] {
        let before = seen(&sandbox, TRANSACTIONS).len();
        let request = Request::get(sidecar.url(TRANSACTIONS))
            .header(
                "connection",
                "x-auth-token, Authorization, x-request-id, traceparent, platform, uuid",
            )
            .header("x-request-id", format!("conn-{mode}"))
            .body(Full::default())
            .unwrap();
        let response = send(&app, request).await;
        assert_eq!(
            response.status,
            200,
            "{mode}: {:?}",
            String::from_utf8_lossy(&response.body)
        );
        let tries = seen(&sandbox, TRANSACTIONS);
        assert_eq!(tries.len(), before + 1, "{mode}");
        let request = tries.last().unwrap();
        let credential = header(request, "x-auth-token");
        assert_eq!(
            credential.len(),
            1,
            "{mode}: the sidecar's credential arrives"
        );
        if mode == "static" {
            assert_eq!(credential, vec![token.as_str()]);
        }
        assert_eq!(
            header(request, "x-request-id"),
            vec![format!("conn-{mode}")]
        );
        assert_eq!(header(request, "traceparent").len(), 1, "{mode}");
        assert_eq!(header(request, "platform"), vec!["fincode"], "{mode}");
    }
}

/// A1, the response direction: hop-by-hop headers in FinCode's response, the ones its
/// `Connection` header names and `Proxy-*` included, never reach the app.
#[tokio::test]
async fn hop_by_hop_headers_in_fincodes_response_do_not_reach_the_app() {
    let sandbox = TestSandbox::start().await;
    let sidecar = SidecarBuilder::new(&sandbox)
        // HTTP/2 forbids connection-specific headers outright; HTTP/1.1 is where they live.
        .set("upstream.http2", false)
        .start_ready()
        .await;
    let headers = [
        "connection:x-fincode-hop",
        "x-fincode-hop:1",
        "keep-alive:timeout%3D5",
        "proxy-status:fincode",
        "proxy-authenticate:Basic",
        "x-kept:yes",
    ];
    let query: Vec<String> = headers
        .iter()
        .map(|h| format!("respond_header={h}"))
        .collect();
    let url = sidecar.url(&format!("/sandbox/echo?{}", query.join("&")));
    let response = get(&app_client(), &url).await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.header("x-kept"), Some("yes"));
    for name in [
        "x-fincode-hop",
        "keep-alive",
        "proxy-status",
        "proxy-authenticate",
    ] {
        assert!(response.header(name).is_none(), "{name}: {response:?}");
    }
}

/// A6: in login mode the app cannot call FinCode's security management (logout would
/// revoke the sidecar's token under every other request), however it spells the path.
#[tokio::test]
async fn the_app_cannot_log_the_sidecar_out_in_login_mode() {
    let sandbox = TestSandbox::start().await;
    let sidecar = SidecarBuilder::new(&sandbox)
        .login(&sandbox, DEMO_EMAIL, DEMO_PASSWORD)
        .start_ready()
        .await;
    let app = app_client();
    let logins = sandbox.counters().logins_ok;
    assert_eq!(logins, 1);
    let before = sandbox.requests().len();

    for path in [
        "/securitymanagement/logout",
        "/api/v6/services/securitymanagement/logout",
        "/SecurityManagement/Logout",
        "//securitymanagement//logout",
        "/%73ecuritymanagement/logout",
        "/securitymanagement/login",
        "/securitymanagement/refresh-token",
        "/securitymanagement",
    ] {
        let request = Request::put(sidecar.url(path))
            .header("content-type", "application/json")
            .body(Full::from("{}"))
            .unwrap();
        let response = send(&app, request).await;
        response.assert_problem(403, "forbidden_route");
    }
    assert_eq!(
        sandbox.requests().len(),
        before,
        "nothing reached FinCode: {:?}",
        &sandbox.requests()[before..]
    );
    assert_eq!(sandbox.counters().logouts, 0);

    // The sidecar's token still works.
    let response = get(&app, &sidecar.url(TRANSACTIONS)).await;
    assert_eq!(response.status, 200);
    assert_eq!(
        sandbox.counters().logins_ok,
        logins,
        "no new login was needed"
    );
}

/// A6, static mode (decided): the sidecar owns the credential here too, and FinCode's
/// logout revokes a dashboard token, which no refresh can bring back.
#[tokio::test]
async fn the_app_cannot_revoke_the_static_token() {
    let (sandbox, sidecar) = static_sidecar().await;
    let app = app_client();
    let request = Request::put(sidecar.url("/securitymanagement/logout"))
        .body(Full::default())
        .unwrap();
    send(&app, request)
        .await
        .assert_problem(403, "forbidden_route");
    assert_eq!(sandbox.counters().logouts, 0);
    assert!(seen(&sandbox, "/securitymanagement/logout").is_empty());
    assert_eq!(get(&app, &sidecar.url(TRANSACTIONS)).await.status, 200);
}

/// A8: `//` is collapsed and letter case ignored before the route is matched, so
/// create-transaction's own limit holds however the app spells the path, and FinCode gets
/// the canonical path.
#[tokio::test]
async fn double_slashes_do_not_escape_the_route_rate_limit() {
    let sandbox = TestSandbox::start().await;
    let sidecar = SidecarBuilder::with_static_token(&sandbox)
        .set("rate_limit.per_second", 1000)
        .set("rate_limit.max_wait", "0s")
        .route_rate_limit(CREATE, 1, 1)
        .start_ready()
        .await;
    let app = app_client();
    let post = |path: &str, key: &str| {
        Request::post(sidecar.url(path))
            .header("content-type", "application/json")
            .header("x-idempotency-key", key)
            .body(Full::from(r#"{"amount":5,"currency":"GBP"}"#))
            .unwrap()
    };
    let first = send(
        &app,
        post("//transactionmanagement//create-transaction", "k-1"),
    )
    .await;
    assert_eq!(first.status, 200, "{first:?}");
    for (path, key) in [
        (CREATE, "k-2"),
        ("//transactionmanagement//create-transaction", "k-3"),
        (
            "/api/v6/services//transactionmanagement/create-transaction/",
            "k-4",
        ),
        ("///transactionmanagement///create-transaction", "k-5"),
        // The guard reads paths in any letter case; so does the route.
        ("/TransactionManagement/Create-Transaction", "k-6"),
        (
            "/API/V6/Services/TRANSACTIONMANAGEMENT/create-transaction",
            "k-7",
        ),
    ] {
        send(&app, post(path, key))
            .await
            .assert_problem(429, "rate_limited");
    }
    let creates = seen(&sandbox, CREATE);
    assert_eq!(creates.len(), 1, "only the first reached FinCode");
    let any_case = sandbox
        .requests()
        .into_iter()
        .filter(|r| r.uri.to_ascii_lowercase().ends_with(CREATE))
        .count();
    assert_eq!(any_case, 1, "in any letter case");
    assert_eq!(
        creates[0].uri, "/api/v6/services/transactionmanagement/create-transaction",
        "FinCode gets the normalised path"
    );
}

/// A8: encoded dot segments and separators, path parameters and backslashes are refused
/// with 400 `bad_path`; none reaches FinCode.
#[tokio::test]
async fn encoded_dot_segments_and_separators_are_refused() {
    let (sandbox, sidecar) = static_sidecar().await;
    let before = sandbox.requests().len();
    for path in [
        "/transactionmanagement/%2e%2e/securitymanagement/logout",
        "/transactionmanagement/%2E%2E/x",
        "/transactionmanagement/..%2fsecuritymanagement/logout",
        "/transactionmanagement/..%2Fx",
        "/transactionmanagement/..;/securitymanagement/logout",
        "/transactionmanagement;x/transactions",
        "/transactionmanagement/..%5cx",
        "/transactionmanagement/%252e%252e/x",
        "/transactionmanagement/%%32%65%%32%65/x",
        "/transactionmanagement/../x",
    ] {
        let request = format!("GET {path} HTTP/1.1\r\nHost: sidecar\r\nConnection: close\r\n\r\n");
        let reply = raw_exchange(sidecar.egress_addr(), request.as_bytes()).await;
        assert!(reply.starts_with("HTTP/1.1 400"), "{path} -> {reply:?}");
        assert!(
            reply
                .to_ascii_lowercase()
                .contains("x-sidecar-error: bad_path"),
            "{path} -> {reply:?}"
        );
    }
    // A raw backslash is refused too (by the parser or by the sidecar).
    let reply = raw_exchange(
        sidecar.egress_addr(),
        b"GET /transactionmanagement/..\\x HTTP/1.1\r\nHost: sidecar\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply:?}");
    assert_eq!(sandbox.requests().len(), before, "nothing reached FinCode");
    // And the sidecar still serves.
    assert_eq!(
        get(&app_client(), &sidecar.url(TRANSACTIONS)).await.status,
        200
    );
}

/// An app that stops sending its body half-way gets 408 `body_timeout` at
/// `retry.deadline`, nothing reaches FinCode, and however many apps do it the breaker
/// stays closed: a slow upload is the app's fault, not FinCode's.
#[tokio::test]
async fn stalled_request_bodies_get_408_and_never_open_the_breaker() {
    let sandbox = TestSandbox::start().await;
    let sidecar = SidecarBuilder::with_static_token(&sandbox)
        .set("retry.per_try_timeout", "1s")
        .set("retry.deadline", "1s")
        .set("breaker.consecutive_failures", 2)
        .set("breaker.min_requests", 2)
        .start_ready()
        .await;
    let before = sandbox.requests().len();

    let stalls = (0..4).map(|i| {
        let addr = sidecar.egress_addr();
        async move {
            let head = format!(
                "POST {CREATE} HTTP/1.1\r\nHost: sidecar\r\nContent-Type: application/json\r\n\
                 X-Idempotency-Key: stall-{i}\r\nContent-Length: 40\r\n\r\n{{\"amount\":"
            );
            raw_exchange(addr, head.as_bytes()).await
        }
    });
    for reply in futures_util::future::join_all(stalls).await {
        assert!(reply.starts_with("HTTP/1.1 408"), "{reply:?}");
        let lower = reply.to_ascii_lowercase();
        assert!(lower.contains("x-sidecar-error: body_timeout"), "{reply:?}");
        assert!(lower.contains("application/problem+json"), "{reply:?}");
    }
    assert_eq!(sandbox.requests().len(), before, "nothing reached FinCode");

    let metrics = sidecar.scrape().await;
    let state = metric_value(&metrics, "fincode_circuit_breaker_state");
    assert!(state < 0.5, "breaker state {state} (0 is closed)");
    let timeouts = metric_value_labelled(&metrics, "fincode_sidecar_errors_total", "body_timeout");
    assert!(
        (timeouts - 4.0).abs() < 0.5,
        "{timeouts} body_timeout errors"
    );
    assert_eq!(
        send(
            &app_client(),
            create_transaction(
                &sidecar,
                Some("after-stalls"),
                r#"{"amount":9,"currency":"GBP"}"#
            )
        )
        .await
        .status,
        200,
        "FinCode is still reachable for everyone"
    );
}
