//! End-to-end: credentials. The real binary logs in to the sandbox over TLS with an
//! RSA-encrypted password, refreshes single-flight, renews on 401, backs off on bad
//! credentials, and never lets a secret reach its output.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use support::*;

/// A create-transaction body.
const GBP_100: &str = r#"{"amount":100,"currency":"GBP"}"#;

const EMAIL: &str = "ops-canary-7c1e@merchant.test";
const PASSWORD: &str = "CANARY-pw-4f1d9a7b2e55";

async fn sandbox_with(adjust: impl FnOnce(&mut fincode_sandbox::SandboxConfig)) -> TestSandbox {
    TestSandbox::with_user(EMAIL, PASSWORD, adjust).await
}

async fn logged_in(sandbox: &TestSandbox, builder: SidecarBuilder) -> Sidecar {
    builder.login(sandbox, EMAIL, PASSWORD).start_ready().await
}

/// The app lists transactions through `sidecar` and FinCode answers 200: the sidecar holds
/// a token FinCode accepts.
async fn assert_transactions_answer(app: &AppClient, sidecar: &Sidecar) {
    let response = get(app, &sidecar.url("/transactionmanagement/transactions")).await;
    assert_eq!(response.status, 200, "{response:?}");
}

/// These tests make FinCode forget a token seconds after it was issued; by default such a
/// 401 does not renew it (`auth.renew_on_401_min_age`, see
/// `many_401s_on_a_fresh_token_start_no_refresh`).
fn renewing_on_every_401(sandbox: &TestSandbox) -> SidecarBuilder {
    SidecarBuilder::new(sandbox).set("auth.renew_on_401_min_age", "0s")
}

fn count_requests(sandbox: &TestSandbox, method: &str, path_suffix: &str) -> usize {
    sandbox
        .requests()
        .iter()
        .filter(|r| r.method == method && r.uri.ends_with(path_suffix))
        .count()
}

#[tokio::test]
async fn a_thousand_concurrent_requests_meeting_an_expired_token_cause_one_refresh() {
    let sandbox = sandbox_with(|_| {}).await;
    // A thousand at once is over the default rate limit; this test is about the refresh.
    let builder = renewing_on_every_401(&sandbox).set("rate_limit.per_second", 0);
    let sidecar = logged_in(&sandbox, builder).await;
    assert_eq!(sandbox.counters().logins_ok, 1);

    sandbox.expire_access_tokens();
    let client = app_client_h2c();
    let url = sidecar.url("/transactionmanagement/transactions");
    let requests: Vec<_> = (0..1000)
        .map(|_| {
            let client = client.clone();
            let url = url.clone();
            tokio::spawn(async move { get(&client, &url).await.status })
        })
        .collect();
    for request in requests {
        assert_eq!(
            request.await.unwrap(),
            200,
            "every request succeeds for the app"
        );
    }
    let counters = sandbox.counters();
    assert_eq!(counters.refreshes_ok, 1, "single flight: {counters:?}");
    assert_eq!(counters.refreshes_failed, 0);
    assert_eq!(counters.logins_ok, 1, "a refresh, not a new login");
}

#[tokio::test]
async fn tokens_are_refreshed_before_they_expire() {
    let sandbox = sandbox_with(|config| config.token_lifetime = Duration::from_secs(4)).await;
    let sidecar = logged_in(
        &sandbox,
        SidecarBuilder::new(&sandbox).set("auth.refresh_before", "2s"),
    )
    .await;
    let client = app_client();
    let mut sent = 0;
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(5) {
        let response = get(&client, &sidecar.url("/transactionmanagement/transactions")).await;
        assert_eq!(response.status, 200);
        sent += 1;
        // Deliberate: steady traffic across real time, through several renewals.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let counters = sandbox.counters();
    assert!(counters.refreshes_ok >= 2, "{counters:?}");
    assert_eq!(counters.logins_ok, 1);
    assert_eq!(
        count_requests(&sandbox, "GET", "/transactionmanagement/transactions"),
        sent,
        "no request met an expired token (none needed a replay)"
    );
}

#[tokio::test]
async fn a_refresh_token_already_used_leads_to_a_fresh_login() {
    let sandbox = sandbox_with(|_| {}).await;
    let sidecar = logged_in(&sandbox, renewing_on_every_401(&sandbox)).await;
    // Another client used our refresh token, and our access token is now rejected.
    sandbox.consume_refresh_tokens();
    sandbox.expire_access_tokens();
    let response = get(
        &app_client(),
        &sidecar.url("/transactionmanagement/transactions"),
    )
    .await;
    assert_eq!(response.status, 200, "{response:?}");
    let counters = sandbox.counters();
    assert_eq!(counters.refreshes_failed, 1, "{counters:?}");
    assert_eq!(counters.logins_ok, 2, "fell back to a fresh login");
}

#[tokio::test]
async fn a_401_is_renewed_and_replayed_once_but_an_unkeyed_post_is_sent_once() {
    let sandbox = sandbox_with(|_| {}).await;
    let sidecar = logged_in(&sandbox, renewing_on_every_401(&sandbox)).await;
    let app = app_client();

    // GET: replayed with the new token, the app sees 200.
    sandbox.expire_access_tokens();
    assert_transactions_answer(&app, &sidecar).await;
    assert_eq!(
        count_requests(&sandbox, "GET", "/transactionmanagement/transactions"),
        2
    );

    // POST with an idempotency key: replayed, one side effect.
    sandbox.expire_access_tokens();
    let keyed = send(&app, create_transaction(&sidecar, Some("k-401"), GBP_100)).await;
    assert_eq!(keyed.status, 200, "{keyed:?}");
    assert_eq!(sandbox.counters().side_effects.get("k-401"), Some(&1));
    assert_eq!(count_requests(&sandbox, "POST", "/create-transaction"), 2);

    // POST without a key: never sent twice. The app gets FinCode's 401 untouched.
    sandbox.expire_access_tokens();
    let unkeyed = send(&app, create_transaction(&sidecar, None, GBP_100)).await;
    assert_eq!(unkeyed.status, 401);
    assert!(
        unkeyed.header("x-sidecar-error").is_none(),
        "FinCode's answer, not ours"
    );
    assert_eq!(
        count_requests(&sandbox, "POST", "/create-transaction"),
        3,
        "sent once"
    );
    // The token was renewed meanwhile: the app's next call is authenticated.
    assert_transactions_answer(&app, &sidecar).await;
    assert_eq!(sandbox.counters().refreshes_ok, 3);
}

#[tokio::test]
async fn a_wrong_password_means_not_ready_503_and_a_single_login_attempt() {
    let sandbox = sandbox_with(|_| {}).await;
    let sidecar = SidecarBuilder::new(&sandbox)
        .login(&sandbox, EMAIL, "CANARY-wrong-pw-0d3c9")
        .set("auth.login_backoff_initial", "400ms")
        .set("auth.login_backoff_max", "10s")
        .start();
    let window = Duration::from_secs(3);
    // Deliberate: the window in which no second attempt may happen is the thing under test.
    tokio::time::sleep(window).await;
    let app = app_client();

    let ready = get(&app, &sidecar.admin_url("/readyz")).await;
    assert_eq!(ready.status, 503);
    let body = String::from_utf8_lossy(&ready.body);
    assert!(
        body.contains("no FinCode token") && body.contains("401: bad credentials"),
        "{body}"
    );

    let response = get(&app, &sidecar.url("/transactionmanagement/transactions")).await;
    let problem = response.assert_problem(503, "auth_failed");
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("401") && detail.contains("bad credentials"),
        "{detail}"
    );

    // A 401 from login does not cure itself: one attempt, not one per backoff step (the
    // account, locked by FinCode after 5 failures, stays unlocked).
    let failed = sandbox.counters().logins_failed;
    assert_eq!(failed, 1, "{failed} login attempts in {window:?}");
    assert_eq!(
        count_requests(&sandbox, "GET", "/transactions"),
        0,
        "nothing sent unauthenticated"
    );
    assert_no_secrets(&sidecar.output(), &["CANARY-wrong-pw-0d3c9"]);
}

/// The `uuid` header values the sandbox saw on requests whose path ends with `path_suffix`.
fn device_ids_seen(sandbox: &TestSandbox, path_suffix: &str) -> Vec<String> {
    sandbox
        .requests()
        .iter()
        .filter(|r| r.uri.ends_with(path_suffix))
        .flat_map(|r| {
            r.headers
                .iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case("uuid"))
                .map(|(_, v)| v.clone())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test]
async fn login_works_with_the_public_key_as_fincodes_dashboard_shows_it_in_a_file_or_a_variable() {
    let sandbox = sandbox_with(|_| {}).await;
    let bare = std::fs::read_to_string(sandbox.public_key_base64_path()).unwrap();
    assert!(
        !bare.contains("-----") && !bare.trim().is_empty(),
        "the sandbox hands out bare Base64"
    );

    // In a file.
    let in_file = SidecarBuilder::new(&sandbox)
        .login(&sandbox, EMAIL, PASSWORD)
        .set(
            "auth.public_key_file",
            sandbox.public_key_base64_path().display().to_string(),
        )
        .start_ready()
        .await;
    let response = get(
        &app_client(),
        &in_file.url("/transactionmanagement/transactions"),
    )
    .await;
    assert_eq!(response.status, 200);

    // In a variable (no file), wrapped at 64 columns as a copy from a web page may leave it.
    let wrapped: Vec<&str> = bare
        .trim()
        .as_bytes()
        .chunks(64)
        .map(|line| std::str::from_utf8(line).unwrap())
        .collect();
    let _in_variable = SidecarBuilder::new(&sandbox)
        .set("auth.mode", "login")
        .set("auth.email_env", "TEST_FINCODE_EMAIL")
        .set("auth.password_env", "TEST_FINCODE_PASSWORD")
        .set("auth.public_key_env", "TEST_FINCODE_PUBLIC_KEY")
        .env("TEST_FINCODE_EMAIL", EMAIL)
        .env("TEST_FINCODE_PASSWORD", PASSWORD)
        .env("TEST_FINCODE_PUBLIC_KEY", &wrapped.join("\n"))
        .start_ready()
        .await;

    let counters = sandbox.counters();
    assert_eq!((counters.logins_ok, counters.logins_failed), (2, 0));
    // FinCode's API reference: uuid "Use 200" on every request, login included.
    assert_eq!(
        device_ids_seen(&sandbox, "/securitymanagement/login"),
        ["200", "200"]
    );
    assert_eq!(
        device_ids_seen(&sandbox, "/transactionmanagement/transactions"),
        ["200"]
    );
}

#[tokio::test]
async fn oaep_mgf1_sha256_is_refused_by_a_fincode_that_decrypts_like_java_and_works_where_configured()
 {
    // The default sandbox decrypts as FinCode's Java server does (MGF1-SHA1).
    let sandbox = sandbox_with(|_| {}).await;
    let sidecar = SidecarBuilder::new(&sandbox)
        .login(&sandbox, EMAIL, PASSWORD)
        .set("auth.oaep_mgf1", "sha256")
        .set("auth.login_backoff_initial", "5s")
        .start();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while sandbox.counters().logins_failed == 0 {
        assert!(std::time::Instant::now() < deadline, "no login attempt");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let app = app_client();
    let response = get(&app, &sidecar.url("/transactionmanagement/transactions")).await;
    let problem = response.assert_problem(503, "auth_failed");
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("401") && detail.contains("bad credentials"),
        "{detail}"
    );
    assert_eq!(sandbox.counters().logins_ok, 0);
    assert_no_secrets(&sidecar.output(), &[PASSWORD]);

    // A FinCode configured for MGF1-SHA256 accepts the same setting.
    let sha256_sandbox =
        sandbox_with(|config| config.oaep_mgf1 = fincode_sandbox::OaepMgf1::Sha256).await;
    let sidecar = logged_in(
        &sha256_sandbox,
        SidecarBuilder::new(&sha256_sandbox).set("auth.oaep_mgf1", "sha256"),
    )
    .await;
    assert_transactions_answer(&app, &sidecar).await;
    assert_eq!(sha256_sandbox.counters().logins_failed, 0);
}

#[tokio::test]
async fn static_mode_never_calls_login() {
    let sandbox = sandbox_with(|_| {}).await;
    let token = sandbox.mint_static_token(Duration::from_hours(1));
    let mut sidecar = SidecarBuilder::new(&sandbox).static_token(&token).start();
    sidecar.wait_ready(Duration::from_secs(10)).await;
    for _ in 0..5 {
        let response = get(
            &app_client(),
            &sidecar.url("/transactionmanagement/transactions"),
        )
        .await;
        assert_eq!(response.status, 200);
    }
    let counters = sandbox.counters();
    assert_eq!(
        counters.logins_ok + counters.logins_failed,
        0,
        "{counters:?}"
    );
    assert_eq!(counters.refreshes_ok + counters.refreshes_failed, 0);
    // FinCode's API reference: uuid "Use 200" on every request, whatever the credential.
    assert_eq!(
        device_ids_seen(&sandbox, "/transactionmanagement/transactions"),
        ["200"; 5]
    );
    let status = sidecar.terminate(Duration::from_secs(10)).await;
    assert!(status.success());
    assert_eq!(
        sandbox.counters().logouts,
        0,
        "a static token is never logged out"
    );
}

#[tokio::test]
async fn secrets_never_reach_the_output_even_at_trace_and_logout_on_shutdown() {
    let sandbox = sandbox_with(|_| {}).await;
    let mut sidecar = logged_in(
        &sandbox,
        renewing_on_every_401(&sandbox).env("RUST_LOG", "trace"),
    )
    .await;
    let app = app_client();
    // Exercise login, a renewal after expiry, a keyed POST and a GET.
    sandbox.expire_access_tokens();
    get(&app, &sidecar.url("/transactionmanagement/transactions")).await;
    send(
        &app,
        create_transaction(&sidecar, Some("canary-order"), GBP_100),
    )
    .await;

    let tokens: Vec<String> = tokens_seen(&sandbox);
    assert!(tokens.len() >= 2, "the sandbox saw our tokens");
    let status = sidecar.terminate(Duration::from_secs(10)).await;
    assert!(status.success());
    let output = sidecar.output();
    assert_eq!(sandbox.counters().logouts, 1, "logged out on shutdown");

    assert!(output.len() > 10_000, "trace logging is on");
    let mut secrets: Vec<&str> = vec![PASSWORD, EMAIL];
    secrets.extend(tokens.iter().map(String::as_str));
    assert_no_secrets(&output, &secrets);
}

// --- token lifecycle: hangs, cancelled renewals, rejected logins, readiness ---

/// `fincode_login_rejected{reason}`: 0 or 1.
fn rejected(metrics: &str, reason: &str) -> u8 {
    let value = metric_value_labelled(metrics, "fincode_login_rejected", reason);
    u8::from(value > 0.5)
}

#[tokio::test]
async fn a_login_answered_locked_is_tried_once_named_in_readyz_and_retried_much_later() {
    let sandbox = sandbox_with(|_| {}).await;
    sandbox.add_fault(
        fincode_sandbox::FaultRule::status(403)
            .path_prefix("/securitymanagement/login")
            .body(serde_json::json!({"status": "FORBIDDEN", "message": "Account locked"})),
    );
    // A short backoff: on it, 2 s would see half a dozen attempts at a locked account.
    let sidecar = SidecarBuilder::new(&sandbox)
        .login(&sandbox, EMAIL, PASSWORD)
        .set("auth.login_backoff_initial", "100ms")
        .set("auth.login_backoff_max", "400ms")
        .set("auth.login_retry_after_rejection", "4s")
        .start();
    // Deliberate: two seconds in which no second attempt may happen are the thing under test.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let app = app_client();
    let logins = || count_requests(&sandbox, "PUT", "/securitymanagement/login");
    assert_eq!(logins(), 1, "one attempt, then none");

    // Never ready: a rollout with locked credentials stops here. The body says why.
    let ready = get(&app, &sidecar.admin_url("/readyz")).await;
    assert_eq!(ready.status, 503);
    let body = String::from_utf8_lossy(&ready.body).into_owned();
    assert!(body.contains("403: account locked"), "{body}");
    assert!(body.contains("auth.login_retry_after_rejection"), "{body}");
    let response = get(&app, &sidecar.url("/transactionmanagement/transactions")).await;
    let problem = response.assert_problem(503, "auth_failed");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("account locked"),
        "{problem}"
    );
    let metrics = sidecar.scrape().await;
    assert_eq!(rejected(&metrics, "locked"), 1,);
    assert_eq!(rejected(&metrics, "bad_credentials"), 0,);
    let output = sidecar.output();
    let logged = output
        .lines()
        .filter(|l| l.contains("\"level\":\"ERROR\"") && l.contains("rejected the sidecar's login"))
        .count();
    assert_eq!(
        logged, 1,
        "one error line per rejection, not per request:\n{output}"
    );
    assert_no_secrets(&output, &[PASSWORD, EMAIL]);
    assert_no_secrets(&body, &[PASSWORD, EMAIL]);

    // FinCode support unlocked the account; the next attempt comes after
    // auth.login_retry_after_rejection, and succeeds.
    sandbox.clear_faults();
    sidecar.wait_ready(Duration::from_secs(10)).await;
    assert_eq!(logins(), 2);
    let metrics = sidecar.scrape().await;
    assert_eq!(rejected(&metrics, "locked"), 0,);
}

#[tokio::test]
async fn after_a_first_token_fincode_trouble_shows_in_the_readyz_body_not_its_status() {
    let sandbox = sandbox_with(|config| config.token_lifetime = Duration::from_secs(3)).await;
    let sidecar = logged_in(
        &sandbox,
        SidecarBuilder::new(&sandbox)
            .set("auth.refresh_before", "1s")
            .set("auth.login_backoff_initial", "200ms")
            .set("auth.login_backoff_max", "1s"),
    )
    .await;
    let app = app_client();
    let ready = get(&app, &sidecar.admin_url("/readyz")).await;
    assert_eq!(ready.status, 200);
    assert_eq!(&ready.body[..], b"ready\n");

    // FinCode's auth endpoints go down; the token runs out. All along, /readyz is 200:
    // the app's pod stays in its Service.
    sandbox.add_fault(fincode_sandbox::FaultRule::status(503).path_prefix("/securitymanagement"));
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let body = loop {
        let ready = get(&app, &sidecar.admin_url("/readyz")).await;
        let body = String::from_utf8_lossy(&ready.body).into_owned();
        assert_eq!(ready.status, 200, "{body}");
        assert!(body.starts_with("ready\n"), "{body}");
        if body.contains("auth: no valid FinCode token") {
            break body;
        }
        assert!(std::time::Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(body.contains("HTTP 503"), "the cause is named: {body}");
    let response = get(&app, &sidecar.url("/transactionmanagement/transactions")).await;
    response.assert_problem(503, "auth_failed");

    // FinCode is back: the body is clean again.
    sandbox.clear_faults();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let ready = get(&app, &sidecar.admin_url("/readyz")).await;
        if ready.body == b"ready\n"[..] {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{ready:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_transactions_answer(&app, &sidecar).await;
}

#[tokio::test]
async fn an_auth_answer_whose_body_stalls_times_out_and_frees_the_renewal() {
    let sandbox = sandbox_with(|config| config.token_lifetime = Duration::from_secs(4)).await;
    let sidecar = logged_in(
        &sandbox,
        SidecarBuilder::new(&sandbox)
            .set("upstream.request_timeout", "1s")
            .set("auth.refresh_before", "2s")
            .set("auth.login_backoff_initial", "100ms")
            .set("auth.login_backoff_max", "400ms"),
    )
    .await;
    // The next refresh gets its answer's head, and then nothing.
    sandbox.add_fault(
        fincode_sandbox::FaultRule::stall_body(None)
            .path_prefix("/securitymanagement/refresh-token")
            .times(1),
    );
    // The background refresh (at ~2 s) stalls; request_timeout ends it at ~3 s, and the
    // next renewal proceeds before the token runs out (~4 s).
    // Deliberate: the token's lifetime running out in the binary, in real time, is under test.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(sandbox.counters().faults_applied.stall, 1);
    let response = get(
        &app_client(),
        &sidecar.url("/transactionmanagement/transactions"),
    )
    .await;
    assert_eq!(response.status, 200, "{response:?}");
    let counters = sandbox.counters();
    assert!(
        counters.refreshes_ok >= 1,
        "a later renewal went ahead: {counters:?}"
    );
    let output = sidecar.output();
    assert!(
        output.contains("timed out: FinCode") && output.contains("upstream.request_timeout"),
        "{output}"
    );
}

#[tokio::test]
async fn a_renewal_survives_the_request_that_started_it() {
    let sandbox = sandbox_with(|_| {}).await;
    let sidecar = logged_in(
        &sandbox,
        renewing_on_every_401(&sandbox).set("retry.per_try_timeout", "500ms"),
    )
    .await;
    // FinCode acts on the next refresh at once (the refresh token is used up) and
    // answers 1.5 s later, after the request that asked for it has given up.
    sandbox.add_fault(
        fincode_sandbox::FaultRule::latency(Duration::from_millis(1500))
            .path_prefix("/securitymanagement/refresh-token")
            .after_handler()
            .times(1),
    );
    sandbox.expire_access_tokens();
    let app = app_client();
    // Its outcome depends on timing (a later try may carry the new token); what matters
    // is what the renewal did.
    let _ = get(&app, &sidecar.url("/transactionmanagement/transactions")).await;
    // Deliberate: the late (1.5 s) answer arrives in real time after its request gave up.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let response = get(&app, &sidecar.url("/transactionmanagement/transactions")).await;
    assert_eq!(response.status, 200, "{response:?}");
    let counters = sandbox.counters();
    assert_eq!(counters.refreshes_ok, 1, "{counters:?}");
    assert_eq!(
        counters.refreshes_failed, 0,
        "the used-up refresh token was never sent again: {counters:?}"
    );
    assert_eq!(
        counters.logins_ok, 1,
        "no fresh login was needed: {counters:?}"
    );
}

#[tokio::test]
async fn many_401s_on_a_fresh_token_start_no_refresh() {
    let sandbox = sandbox_with(|_| {}).await;
    let sidecar = logged_in(&sandbox, SidecarBuilder::new(&sandbox)).await;
    // An endpoint that answers 401 for reasons of its own (not an expired token).
    sandbox.add_fault(
        fincode_sandbox::FaultRule::status(401).path_prefix("/transactionmanagement/transactions"),
    );
    let app = app_client();
    for _ in 0..20 {
        let response = get(&app, &sidecar.url("/transactionmanagement/transactions")).await;
        assert_eq!(response.status, 401, "FinCode's answer, passed through");
    }
    let counters = sandbox.counters();
    assert_eq!(
        counters.refreshes_ok + counters.refreshes_failed,
        0,
        "{counters:?}"
    );
    assert_eq!(counters.logins_ok, 1, "{counters:?}");
    assert_eq!(
        count_requests(&sandbox, "GET", "/transactionmanagement/transactions"),
        20,
        "none replayed with the same token"
    );
}

#[tokio::test]
async fn an_open_circuit_is_listed_in_readyz_without_failing_it() {
    let sandbox = sandbox_with(|_| {}).await;
    let sidecar = SidecarBuilder::with_static_token(&sandbox)
        .set("breaker.consecutive_failures", 5)
        .set("breaker.open_for", "30s")
        .set("retry.backoff_base", "1ms")
        .set("retry.backoff_cap", "5ms")
        .start_ready()
        .await;
    let app = app_client();
    sandbox.add_fault(fincode_sandbox::FaultRule::reset().path_prefix("/sandbox/ping"));
    for _ in 0..5 {
        get(&app, &sidecar.url("/sandbox/ping")).await;
    }
    get(&app, &sidecar.url("/sandbox/ping"))
        .await
        .assert_problem(503, "circuit_open");

    let ready = get(&app, &sidecar.admin_url("/readyz")).await;
    let body = String::from_utf8_lossy(&ready.body).into_owned();
    assert_eq!(ready.status, 200, "{body}");
    assert_eq!(
        body,
        "ready\nfincode: circuit open (requests fail fast with 503 circuit_open)\n"
    );
}
