//! End-to-end: credentials. The real binary logs in to the sandbox over TLS with an
//! RSA-encrypted password, refreshes single-flight, renews on 401, backs off on bad
//! credentials, and never lets a secret reach its output.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use fincode_sandbox::User;
use support::*;

const EMAIL: &str = "ops-canary-7c1e@merchant.test";
const PASSWORD: &str = "CANARY-pw-4f1d9a7b2e55";

async fn sandbox_with(adjust: impl FnOnce(&mut fincode_sandbox::SandboxConfig)) -> TestSandbox {
    TestSandbox::start_with(|config| {
        config.users = vec![User {
            email: EMAIL.to_owned(),
            password: PASSWORD.to_owned(),
        }];
        adjust(config);
    })
    .await
}

async fn logged_in(sandbox: &TestSandbox, builder: SidecarBuilder) -> Sidecar {
    let sidecar = builder.login(sandbox, EMAIL, PASSWORD).start();
    sidecar.wait_ready(Duration::from_secs(20)).await;
    sidecar
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
    let builder = SidecarBuilder::new(&sandbox).set("rate_limit.per_second", 0);
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
    let sidecar = logged_in(&sandbox, SidecarBuilder::new(&sandbox)).await;
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
    let sidecar = logged_in(&sandbox, SidecarBuilder::new(&sandbox)).await;
    let app = app_client();

    // GET: replayed with the new token, the app sees 200.
    sandbox.expire_access_tokens();
    let response = get(&app, &sidecar.url("/transactionmanagement/transactions")).await;
    assert_eq!(response.status, 200);
    assert_eq!(
        count_requests(&sandbox, "GET", "/transactionmanagement/transactions"),
        2
    );

    // POST with an idempotency key: replayed, one side effect.
    sandbox.expire_access_tokens();
    let keyed = send(
        &app,
        create_transaction(
            &sidecar,
            Some("k-401"),
            r#"{"amount":100,"currency":"GBP"}"#,
        ),
    )
    .await;
    assert_eq!(keyed.status, 200, "{keyed:?}");
    assert_eq!(sandbox.counters().side_effects.get("k-401"), Some(&1));
    assert_eq!(count_requests(&sandbox, "POST", "/create-transaction"), 2);

    // POST without a key: never sent twice. The app gets FinCode's 401 untouched.
    sandbox.expire_access_tokens();
    let unkeyed = send(
        &app,
        create_transaction(&sidecar, None, r#"{"amount":100,"currency":"GBP"}"#),
    )
    .await;
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
    let next = get(&app, &sidecar.url("/transactionmanagement/transactions")).await;
    assert_eq!(next.status, 200);
    assert_eq!(sandbox.counters().refreshes_ok, 3);
}

#[tokio::test]
async fn a_wrong_password_means_not_ready_503_and_spaced_login_attempts() {
    let sandbox = sandbox_with(|_| {}).await;
    let sidecar = SidecarBuilder::new(&sandbox)
        .login(&sandbox, EMAIL, "CANARY-wrong-pw-0d3c9")
        .set("auth.login_backoff_initial", "400ms")
        .set("auth.login_backoff_max", "10s")
        .start();
    let window = Duration::from_secs(3);
    tokio::time::sleep(window).await;
    let app = app_client();

    let ready = get(&app, &sidecar.admin_url("/readyz")).await;
    assert_eq!(ready.status, 503);
    assert!(String::from_utf8_lossy(&ready.body).contains("no FinCode token"));

    let response = get(&app, &sidecar.url("/transactionmanagement/transactions")).await;
    let problem = response.assert_problem(503, "auth_failed");
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("401") && detail.contains("bad credentials"),
        "{detail}"
    );

    // Backoff 400ms doubling with jitter in [d/2, d]: attempts at 0, >=0.2s, >=0.6s,
    // >=1.4s, >=3.0s, so at most 4 in 3 s (and at least 2), not hundreds; and the
    // account (locked by FinCode after 5 failures) stays unlocked.
    let failed = sandbox.counters().logins_failed;
    assert!(
        (2..=4).contains(&failed),
        "{failed} login attempts in {window:?}"
    );
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
        .start();
    in_file.wait_ready(Duration::from_secs(20)).await;
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
    let in_variable = SidecarBuilder::new(&sandbox)
        .set("auth.mode", "login")
        .set("auth.email_env", "TEST_FINCODE_EMAIL")
        .set("auth.password_env", "TEST_FINCODE_PASSWORD")
        .set("auth.public_key_env", "TEST_FINCODE_PUBLIC_KEY")
        .env("TEST_FINCODE_EMAIL", EMAIL)
        .env("TEST_FINCODE_PASSWORD", PASSWORD)
        .env("TEST_FINCODE_PUBLIC_KEY", &wrapped.join("\n"))
        .start();
    in_variable.wait_ready(Duration::from_secs(20)).await;

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
    let response = get(&app, &sidecar.url("/transactionmanagement/transactions")).await;
    assert_eq!(response.status, 200);
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
        SidecarBuilder::new(&sandbox).env("RUST_LOG", "trace"),
    )
    .await;
    let app = app_client();
    // Exercise login, a renewal after expiry, a keyed POST and a GET.
    sandbox.expire_access_tokens();
    get(&app, &sidecar.url("/transactionmanagement/transactions")).await;
    send(
        &app,
        create_transaction(
            &sidecar,
            Some("canary-order"),
            r#"{"amount":100,"currency":"GBP"}"#,
        ),
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
