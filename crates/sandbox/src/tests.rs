//! In-process tests: the router driven with `oneshot`, and the pure pieces on their own.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use http::{Method, Request, StatusCode};
use serde_json::{Value, json};
use tower::ServiceExt as _;

use crate::faults::{FaultBook, FaultKind, FaultPhase, FaultRule};
use crate::keys::{LoginKey, PUBLIC_KEY_BASE64_FILE, PUBLIC_KEY_FILE};
use crate::server::{Sniffed, classify};
use crate::state::App;
use crate::tokens::{Lifetimes, RefreshError, Tokens};
use crate::{DEMO_EMAIL, DEMO_PASSWORD, OaepMgf1, api, encrypt_password_for_tests};

struct Harness {
    app: Arc<App>,
    router: Router,
    public_pem: String,
    dir: tempfile::TempDir,
}

fn lifetimes() -> Lifetimes {
    Lifetimes {
        access: Duration::from_hours(1),
        refresh: Duration::from_hours(24),
    }
}

async fn harness() -> Harness {
    harness_with(OaepMgf1::default()).await
}

async fn harness_with(mgf1: OaepMgf1) -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = LoginKey::load_or_generate(dir.path(), mgf1)
        .await
        .expect("key");
    let public_pem = std::fs::read_to_string(dir.path().join(PUBLIC_KEY_FILE)).expect("pem");
    let users = HashMap::from([(DEMO_EMAIL.to_owned(), DEMO_PASSWORD.to_owned())]);
    let app = Arc::new(App::new(
        users,
        key,
        Tokens::new(lifetimes(), &["static-one".to_owned()]),
    ));
    Harness {
        router: api::router(app.clone()),
        app,
        public_pem,
        dir,
    }
}

impl Harness {
    async fn call(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Body>,
    ) -> (StatusCode, http::HeaderMap, bytes::Bytes) {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", api::API_PREFIX));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(body.into()).expect("request");
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("infallible");
        let (parts, body) = response.into_parts();
        let body = axum::body::to_bytes(body, usize::MAX).await.expect("body");
        (parts.status, parts.headers, body)
    }

    async fn login(&self, email: &str, password: &str) -> (StatusCode, Value) {
        let encrypted = encrypt_password_for_tests(&self.public_pem, password).expect("encrypt");
        let body = json!({"email": email, "currentPassword": encrypted}).to_string();
        let (status, _, body) = self
            .call(Method::PUT, "/securitymanagement/login", &[], body)
            .await;
        (status, serde_json::from_slice(&body).expect("json"))
    }

    async fn token(&self) -> String {
        let (status, body) = self.login(DEMO_EMAIL, DEMO_PASSWORD).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["data"]["token"].as_str().expect("token").to_owned()
    }
}

#[test]
fn sniffing_tells_plain_http_from_tls() {
    assert_eq!(classify(b"GET / HT"), Some(Sniffed::PlainHttp));
    assert_eq!(classify(b"OPTIONS "), Some(Sniffed::PlainHttp));
    assert_eq!(classify(b"DELETE /"), Some(Sniffed::PlainHttp));
    assert_eq!(classify(b"PO"), None, "could still become POST");
    assert_eq!(classify(&[0x16, 0x03, 0x01]), Some(Sniffed::Other));
    assert_eq!(classify(b"GETX"), Some(Sniffed::Other));
}

#[test]
fn refresh_tokens_are_single_use_and_old_access_survives() {
    let tokens = Tokens::new(lifetimes(), &[]);
    let first = tokens.issue_pair("a@b.c");
    let second = tokens.refresh(&first.refresh_token).expect("refresh");
    assert_eq!(
        tokens.refresh(&first.refresh_token).unwrap_err(),
        RefreshError::AlreadyUsed
    );
    assert_eq!(
        tokens.refresh("nonsense").unwrap_err(),
        RefreshError::Invalid
    );
    assert!(tokens.is_valid(&first.token));
    assert!(tokens.is_valid(&second.token));
    assert!(tokens.logout(&second.token));
    assert!(!tokens.is_valid(&second.token));
    assert_eq!(
        tokens.refresh(&second.refresh_token).unwrap_err(),
        RefreshError::Invalid,
        "logout revokes the refresh token too"
    );
}

#[test]
fn forged_and_expired_tokens_are_refused() {
    let tokens = Tokens::new(lifetimes(), &[]);
    let pair = tokens.issue_pair("a@b.c");
    let other = Tokens::new(lifetimes(), &[]).issue_pair("a@b.c");
    assert!(!tokens.is_valid(&other.token), "signed with another key");
    let mut tampered = pair.token.clone();
    tampered.push('x');
    assert!(!tokens.is_valid(&tampered));
    let static_token = tokens.mint_static(Duration::from_hours(1));
    tokens.expire_access_tokens();
    assert!(!tokens.is_valid(&pair.token));
    assert!(
        tokens.is_valid(&static_token),
        "static tokens do not expire"
    );
}

#[test]
fn fault_rules_apply_in_order_and_respect_times() {
    let mut book = FaultBook::default();
    book.push(FaultRule::latency(Duration::from_millis(5)).times(1));
    book.push(
        FaultRule::status(503)
            .times(2)
            .path_prefix("/transactionmanagement")
            .method("post"),
    );
    book.push(FaultRule::reset().after_handler());

    let first = book.decide("POST", "/transactionmanagement/x", FaultPhase::Before);
    assert_eq!(first.delay, Duration::from_millis(5));
    assert_eq!(first.applied, vec![FaultKind::Latency, FaultKind::Status]);
    let second = book.decide("POST", "/transactionmanagement/x", FaultPhase::Before);
    assert_eq!(second.applied, vec![FaultKind::Status]);
    let third = book.decide("POST", "/transactionmanagement/x", FaultPhase::Before);
    assert!(third.action.is_none(), "times exhausted");
    let other = book.decide("GET", "/transactionmanagement/x", FaultPhase::Before);
    assert!(other.applied.is_empty(), "method does not match");
    let after = book.decide("GET", "/anything", FaultPhase::After);
    assert_eq!(after.applied, vec![FaultKind::Reset]);
}

#[test]
fn fault_rules_deserialize_with_defaults_and_reject_typos() {
    let rule: FaultRule = serde_json::from_value(json!({"kind": "status", "status": 429})).unwrap();
    assert!((rule.rate - 1.0).abs() < f64::EPSILON);
    assert_eq!(rule.phase, FaultPhase::Before);
    assert!(serde_json::from_value::<FaultRule>(json!({"kind": "status", "stauts": 1})).is_err());
    assert!(
        FaultRule::latency(Duration::ZERO)
            .rate(2.0)
            .validate()
            .is_err()
    );
}

#[tokio::test]
async fn login_right_wrong_unknown_and_lockout() {
    let h = harness().await;
    let (status, body) = h.login(DEMO_EMAIL, DEMO_PASSWORD).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "SUCCESS");
    assert_eq!(body["data"]["expires_in"], 3600);

    let (status, body) = h.login("nobody@merchant.test", "x").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("NOT_FOUND"))
    );

    for _ in 0..5 {
        let (status, body) = h.login(DEMO_EMAIL, "wrong").await;
        assert_eq!(body["code"], "AUTH_REQUIRED");
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, body) = h.login(DEMO_EMAIL, DEMO_PASSWORD).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["message"], "Account locked");

    h.app.reset();
    let (status, _) = h.login(DEMO_EMAIL, DEMO_PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "reset clears the lockout");
    let counters = h.app.counters.snapshot();
    assert_eq!((counters.logins_ok, counters.logins_failed), (1, 0));
}

#[tokio::test]
async fn malformed_input_gets_fincodes_422_shape() {
    let h = harness().await;
    for body in ["{not json", "[]", ""] {
        let (status, headers, bytes) = h
            .call(Method::PUT, "/securitymanagement/login", &[], body)
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(headers["content-type"], "application/json");
        let value: Value = serde_json::from_slice(&bytes).expect("json");
        assert_eq!(value["code"], "VALIDATION_ERROR");
    }
    let (status, _, _) = h
        .call(
            Method::PUT,
            "/securitymanagement/login",
            &[],
            r#"{"email":"demo@merchant.test","currentPassword":"%%%"}"#,
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "undecryptable password");
}

#[tokio::test]
async fn create_transaction_is_idempotent_per_key() {
    let h = harness().await;
    let token = h.token().await;
    let body = r#"{"amount": 1000, "currency": "GBP"}"#;
    let reordered = r#"{"currency":"GBP","amount":1000}"#;
    let path = "/transactionmanagement/create-transaction";
    let auth = [
        ("x-auth-token", token.as_str()),
        ("x-idempotency-key", "k-1"),
    ];

    let (status, headers, first) = h.call(Method::POST, path, &auth, body).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers.contains_key("x-fincode-request-id"));
    let created: Value = serde_json::from_slice(&first).expect("json");
    assert_eq!(created["data"]["id"], "TXN-1");
    assert_eq!(created["data"]["status"], "PENDING");
    assert_eq!(created["data"]["amount"], 1000);
    let reference = created["data"]["reference"].as_str().expect("reference");
    assert!(
        reference.starts_with("PCN") && reference.len() == 13,
        "{reference}"
    );

    let (status, _, replay) = h.call(Method::POST, path, &auth, reordered).await;
    assert_eq!((status, &replay), (StatusCode::OK, &first), "same bytes");

    let (status, _, bytes) = h.call(Method::POST, path, &auth, r#"{"amount": 2}"#).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(String::from_utf8_lossy(&bytes).contains("different body"));

    let (status, _, bytes) = h
        .call(Method::POST, path, &[("x-auth-token", &token)], body)
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(String::from_utf8_lossy(&bytes).contains("X-Idempotency-Key header is required"));

    let (status, _, _) = h
        .call(Method::POST, path, &[("x-idempotency-key", "k-2")], body)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let counters = h.app.counters.snapshot();
    assert_eq!(counters.transactions_created, 1);
    assert_eq!(counters.idempotent_replays, 1);
    assert_eq!(counters.side_effects.get("k-1"), Some(&1));

    let static_auth = [("x-auth-token", "static-one")];
    let (status, _, bytes) = h
        .call(
            Method::GET,
            "/transactionmanagement/transactions/TXN-1",
            &static_auth,
            "",
        )
        .await;
    assert_eq!(status, StatusCode::OK, "static tokens are accepted");
    let fetched: Value = serde_json::from_slice(&bytes).expect("json");
    assert_eq!(fetched["data"]["reference"], reference);
    let (status, _, bytes) = h
        .call(
            Method::GET,
            "/transactionmanagement/transactions?page=0&size=5",
            &static_auth,
            "",
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let listed: Value = serde_json::from_slice(&bytes).expect("json");
    assert_eq!(listed["data"]["total"], 1);
    assert_eq!(listed["data"]["items"][0]["id"], "TXN-1");
    let (status, _, _) = h
        .call(
            Method::GET,
            "/transactionmanagement/transactions/TXN-9",
            &static_auth,
            "",
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn status_fault_replaces_the_response_and_after_phase_keeps_the_side_effect() {
    let h = harness().await;
    let token = h.token().await;
    crate::lock(&h.app.faults).push(
        FaultRule::status(429)
            .retry_after("2")
            .times(1)
            .after_handler()
            .path_prefix("/transactionmanagement"),
    );
    let auth = [
        ("x-auth-token", token.as_str()),
        ("x-idempotency-key", "k-after"),
    ];
    let path = "/transactionmanagement/create-transaction";
    let (status, headers, bytes) = h.call(Method::POST, path, &auth, "{}").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(headers["retry-after"], "2");
    let body: Value = serde_json::from_slice(&bytes).expect("json");
    assert_eq!(body["code"], "RATE_LIMIT_EXCEEDED");
    let (status, _, _) = h.call(Method::POST, path, &auth, "{}").await;
    assert_eq!(status, StatusCode::OK);
    let counters = h.app.counters.snapshot();
    assert_eq!(counters.side_effects.get("k-after"), Some(&1));
    assert_eq!(counters.idempotent_replays, 1);
    assert_eq!(counters.faults_applied.status, 1);
}

#[tokio::test]
async fn unknown_routes_and_methods_keep_the_fincode_shape() {
    let h = harness().await;
    let (status, headers, _) = h.call(Method::GET, "/nope", &[], "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(headers["content-type"], "application/json");
    let (status, _, bytes) = h.call(Method::DELETE, "/sandbox/ping", &[], "").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(serde_json::from_slice::<Value>(&bytes).is_ok());
    let (status, _, bytes) = h.call(Method::GET, "/sandbox/ping", &[], "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&bytes[..], br#"{"status":"SUCCESS","data":"pong"}"#);
    let log = h.app.seen_requests();
    assert_eq!(log.len(), 3);
    assert_eq!(log[0].uri, "/api/v6/services/nope");
}

// === Login decryption, cross-checked with independent implementations ===

/// Runs an independent implementation (openssl, java); `None`, said loudly, when it is not
/// installed, except under CI, where the cross-check must run.
fn run_tool(program: &str, args: &[&std::ffi::OsStr]) -> Option<std::process::Output> {
    match std::process::Command::new(program).args(args).output() {
        Ok(output) => Some(output),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{program} is required under CI for the OAEP cross-check"
            );
            eprintln!("SKIPPED: {program} is not installed; the OAEP cross-check did not run");
            None
        }
        Err(e) => panic!("running {program}: {e}"),
    }
}

impl Harness {
    /// `openssl pkeyutl -encrypt` of `password` under the sandbox's public key with OAEP,
    /// SHA-256 as the digest and `mgf1` as the MGF1 hash; base64.
    fn openssl_encrypt(&self, password: &str, mgf1: &str) -> Option<String> {
        let public = self.dir.path().join(PUBLIC_KEY_FILE);
        let input = self.dir.path().join("plain.txt");
        std::fs::write(&input, password).expect("write");
        let mgf1_opt = format!("rsa_mgf1_md:{mgf1}");
        let args: Vec<&std::ffi::OsStr> = vec![
            "pkeyutl".as_ref(),
            "-encrypt".as_ref(),
            "-pubin".as_ref(),
            "-inkey".as_ref(),
            public.as_os_str(),
            "-in".as_ref(),
            input.as_os_str(),
            "-pkeyopt".as_ref(),
            "rsa_padding_mode:oaep".as_ref(),
            "-pkeyopt".as_ref(),
            "rsa_oaep_md:sha256".as_ref(),
            "-pkeyopt".as_ref(),
            mgf1_opt.as_ref(),
        ];
        let output = run_tool("openssl", &args)?;
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        Some(base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            output.stdout,
        ))
    }

    async fn login_with(&self, email: &str, current_password: &str) -> StatusCode {
        let body = json!({"email": email, "currentPassword": current_password}).to_string();
        let (status, _, _) = self
            .call(Method::PUT, "/securitymanagement/login", &[], body)
            .await;
        status
    }
}

#[tokio::test]
async fn login_decrypts_like_fincodes_java_server_oaep_sha256_mgf1_sha1() {
    harness()
        .await
        .assert_login_decrypts_only(
            "sha1",
            "sha256",
            "FinCode's Java server does not decrypt MGF1-SHA256",
        )
        .await;
}

#[tokio::test]
async fn login_configured_for_mgf1_sha256_decrypts_that_and_refuses_mgf1_sha1() {
    harness_with(OaepMgf1::Sha256)
        .await
        .assert_login_decrypts_only("sha256", "sha1", "")
        .await;
}

impl Harness {
    /// Asserts that a login whose password openssl encrypted with MGF1 hash `mgf1` is
    /// accepted, and one encrypted with `other` refused (`why` says why, if it helps);
    /// skipped (said loudly) when openssl is not installed.
    async fn assert_login_decrypts_only(&self, mgf1: &str, other: &str, why: &str) {
        let Some(accepted) = self.openssl_encrypt(DEMO_PASSWORD, mgf1) else {
            return;
        };
        assert_eq!(self.login_with(DEMO_EMAIL, &accepted).await, StatusCode::OK);
        let Some(refused) = self.openssl_encrypt(DEMO_PASSWORD, other) else {
            return;
        };
        assert_eq!(
            self.login_with(DEMO_EMAIL, &refused).await,
            StatusCode::UNAUTHORIZED,
            "{why}"
        );
    }
}

#[test]
fn oaep_mgf1_parses_from_the_command_line_spelling() {
    assert_eq!("sha1".parse::<OaepMgf1>(), Ok(OaepMgf1::Sha1));
    assert_eq!("sha256".parse::<OaepMgf1>(), Ok(OaepMgf1::Sha256));
    assert!("SHA-1".parse::<OaepMgf1>().is_err());
}

#[tokio::test]
async fn login_accepts_what_javas_default_oaep_sha256_encrypts_with_the_bare_base64_key() {
    let h = harness().await;
    let public = h.dir.path().join(PUBLIC_KEY_BASE64_FILE);
    let program = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../auth/tests/java/FincodeOaep.java"
    );
    let args: Vec<&std::ffi::OsStr> = vec![
        program.as_ref(),
        "encrypt".as_ref(),
        public.as_os_str(),
        DEMO_PASSWORD.as_ref(),
    ];
    let Some(output) = run_tool("java", &args) else {
        return;
    };
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let ciphertext = String::from_utf8(output.stdout).expect("base64");
    assert_eq!(h.login_with(DEMO_EMAIL, &ciphertext).await, StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn stall_fault_sends_the_head_and_holds_the_real_body_back() {
    use http_body_util::BodyExt as _;

    let h = harness().await;
    crate::lock(&h.app.faults).push(
        FaultRule::stall_body(Some(Duration::from_secs(30)))
            .after_handler()
            .path_prefix("/securitymanagement/login")
            .times(1),
    );
    let encrypted = encrypt_password_for_tests(&h.public_pem, DEMO_PASSWORD).expect("encrypt");
    let body = json!({"email": DEMO_EMAIL, "currentPassword": encrypted}).to_string();
    let request = Request::builder()
        .method(Method::PUT)
        .uri(format!("{}/securitymanagement/login", api::API_PREFIX))
        .body(Body::from(body))
        .expect("request");
    let started = tokio::time::Instant::now();
    let response = h.router.clone().oneshot(request).await.expect("infallible");
    assert_eq!(response.status(), StatusCode::OK, "the real head, at once");
    assert!(started.elapsed() < Duration::from_secs(1));
    let mut body = response.into_body();
    let held = tokio::time::timeout(Duration::from_secs(29), body.frame()).await;
    assert!(held.is_err(), "nothing before the hold ends");
    let frame = body.frame().await.expect("a frame").expect("data");
    let json: Value = serde_json::from_slice(frame.data_ref().expect("data")).expect("json");
    assert!(json["data"]["token"].is_string(), "the real answer: {json}");
    let counters = h.app.counters.snapshot();
    assert_eq!((counters.faults_applied.stall, counters.logins_ok), (1, 1));
}
