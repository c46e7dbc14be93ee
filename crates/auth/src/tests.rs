use std::sync::{Arc, Mutex};

use super::*;

/// A transport that must never be called (static and none modes).
struct NoTransport;

impl Transport for NoTransport {
    fn send(&self, _: AuthRequest) -> BoxFuture<'_, Result<AuthResponse, TransportError>> {
        panic!("static and none modes never call FinCode's auth endpoints")
    }
}

fn static_config() -> AuthConfig {
    AuthConfig {
        mode: AuthMode::Static,
        token_env: Some("TEST_FINCODE_TOKEN".into()),
        ..AuthConfig::default()
    }
}

fn build(config: &AuthConfig, env: &Env) -> Result<Credentials, AuthError> {
    Credentials::from_config(config, env, Arc::new(NoTransport))
}

fn empty_env() -> Env {
    Env::from_pairs::<_, &str, &str>([])
}

#[tokio::test]
async fn static_token_replaces_app_credentials() {
    let env = Env::from_pairs([("TEST_FINCODE_TOKEN", "CANARY-tok-123")]);
    let creds = build(&static_config(), &env).unwrap();
    let mut headers = HeaderMap::new();
    headers.insert("x-auth-token", HeaderValue::from_static("app-token"));
    headers.insert("authorization", HeaderValue::from_static("Bearer app"));
    creds.apply(&mut headers).await.unwrap();
    assert_eq!(headers.get_all("x-auth-token").iter().count(), 1);
    assert_eq!(headers["x-auth-token"], "CANARY-tok-123");
    assert!(headers["x-auth-token"].is_sensitive());
    assert!(headers.get("authorization").is_none());
    assert_eq!(headers["platform"], "fincode");
    assert!(creds.is_ready());
    assert!(!creds.renews_tokens());
}

#[test]
fn missing_env_names_the_variable_not_a_value() {
    let err = build(&static_config(), &empty_env()).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("TEST_FINCODE_TOKEN"), "{text}");
    assert!(text.contains("auth.token_env"), "{text}");
}

#[test]
fn debug_never_shows_secrets() {
    let env = Env::from_pairs([("TEST_FINCODE_TOKEN", "CANARY-tok-123")]);
    let creds = build(&static_config(), &env).unwrap();
    assert!(!format!("{creds:?}").contains("CANARY"));
}

#[test]
fn token_with_newline_is_refused_without_echo() {
    let env = Env::from_pairs([("TEST_FINCODE_TOKEN", "CANARY\r\nx: y")]);
    let err = build(&static_config(), &env).unwrap_err();
    assert!(!err.to_string().contains("CANARY"));
}

#[tokio::test]
async fn none_mode_passes_app_credentials_through() {
    let creds = build(&AuthConfig::default(), &empty_env()).unwrap();
    let mut headers = HeaderMap::new();
    headers.insert("x-auth-token", HeaderValue::from_static("app-token"));
    creds.apply(&mut headers).await.unwrap();
    assert_eq!(headers["x-auth-token"], "app-token");
}

#[test]
fn login_mode_refuses_a_bad_public_key_without_echo() {
    let config = AuthConfig {
        mode: AuthMode::Login,
        email_env: Some("E".into()),
        password_env: Some("P".into()),
        public_key_env: Some("K".into()),
        ..AuthConfig::default()
    };
    let env = Env::from_pairs([
        ("E", "a@b.c"),
        ("P", "CANARY-pw"),
        ("K", "CANARY-not-a-key"),
    ]);
    let err = build(&config, &env).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("auth.public_key_env"), "{text}");
    assert!(!text.contains("CANARY"), "{text}");
}

/// A scripted FinCode: counts calls and answers login/refresh from a queue.
struct Scripted {
    calls: Mutex<Vec<String>>,
    answers: Mutex<Vec<(u16, String)>>,
}

impl Transport for Scripted {
    fn send(&self, request: AuthRequest) -> BoxFuture<'_, Result<AuthResponse, TransportError>> {
        self.calls.lock().unwrap().push(request.path.clone());
        let (status, body) = self.answers.lock().unwrap().remove(0);
        Box::pin(async move {
            Ok(AuthResponse {
                status: StatusCode::from_u16(status).unwrap(),
                body: Bytes::from(body),
            })
        })
    }
}

fn login_config(dir: &std::path::Path) -> (AuthConfig, Env) {
    let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 1024).unwrap();
    let pem = rsa::pkcs8::EncodePublicKey::to_public_key_pem(
        &key.to_public_key(),
        rsa::pkcs8::LineEnding::LF,
    )
    .unwrap();
    let path = dir.join("key.pem");
    std::fs::write(&path, pem).unwrap();
    let config = AuthConfig {
        mode: AuthMode::Login,
        email_env: Some("E".into()),
        password_env: Some("P".into()),
        public_key_file: Some(path),
        ..AuthConfig::default()
    };
    (
        config,
        Env::from_pairs([("E", "ops@merchant.test"), ("P", "pw")]),
    )
}

#[tokio::test(start_paused = true)]
async fn failed_logins_back_off_and_a_success_makes_it_ready() {
    let dir = std::env::temp_dir().join(format!("fincode-auth-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let (config, env) = login_config(&dir);
    // Transient failures (a rejected login is terminal instead: see
    // a_locked_account_is_not_hammered_and_is_tried_again_after_the_long_interval).
    let transport = Arc::new(Scripted {
        calls: Mutex::default(),
        answers: Mutex::new(vec![
            (503, "{}".into()),
            (503, "{}".into()),
            (
                200,
                r#"{"data":{"token":"t1","refresh_token":"r1","expires_in":3600}}"#.into(),
            ),
        ]),
    });
    let creds = Credentials::from_config(&config, &env, transport.clone()).unwrap();
    let task = creds.start().unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(!creds.is_ready());
    let err = creds.apply(&mut HeaderMap::new()).await.unwrap_err();
    assert!(err.to_string().contains("503"), "{err}");
    // Defaults: 2s initial, so the second attempt comes after at least 1s, the
    // third after at least 2s more.
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(
        transport.calls.lock().unwrap().len(),
        1,
        "no second attempt before 1s"
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(transport.calls.lock().unwrap().len(), 3);
    assert!(creds.is_ready());
    let mut headers = HeaderMap::new();
    creds.apply(&mut headers).await.unwrap();
    assert_eq!(headers["x-auth-token"], "t1");
    assert!(headers.contains_key("uuid"), "device id header sent");
    task.abort();
    std::fs::remove_dir_all(dir).ok();
}

// --- token lifecycle: renewals outlive requests, no 401 storms, rejected logins ---

/// A FinCode whose answers each take a while: `(delay, status, body)` per call, in order.
struct SlowFincode {
    calls: Mutex<Vec<String>>,
    answers: Mutex<Vec<(Duration, u16, String)>>,
}

impl SlowFincode {
    fn new(answers: Vec<(Duration, u16, String)>) -> Arc<Self> {
        Arc::new(Self {
            calls: Mutex::default(),
            answers: Mutex::new(answers),
        })
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

impl Transport for SlowFincode {
    fn send(&self, request: AuthRequest) -> BoxFuture<'_, Result<AuthResponse, TransportError>> {
        self.calls.lock().unwrap().push(request.path.clone());
        let mut answers = self.answers.lock().unwrap();
        let answer = (!answers.is_empty()).then(|| answers.remove(0));
        Box::pin(async move {
            let Some((delay, status, body)) = answer else {
                return Err(TransportError("no scripted answer left".into()));
            };
            tokio::time::sleep(delay).await;
            Ok(AuthResponse {
                status: StatusCode::from_u16(status).unwrap(),
                body: Bytes::from(body),
            })
        })
    }
}

fn issued(token: &str, refresh: &str) -> String {
    format!(r#"{{"data":{{"token":"{token}","refresh_token":"{refresh}","expires_in":3600}}}}"#)
}

fn token_of(headers: &HeaderMap) -> String {
    headers["x-auth-token"].to_str().unwrap().to_owned()
}

fn temp_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("fincode-auth-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(start_paused = true)]
async fn a_renewal_outlives_the_request_that_started_it() {
    let dir = temp_dir();
    let (config, env) = login_config(&dir);
    let fincode = SlowFincode::new(vec![
        (Duration::ZERO, 200, issued("t1", "r1")),
        // FinCode consumes r1 at once but answers slowly.
        (Duration::from_secs(5), 200, issued("t2", "r2")),
    ]);
    let creds = Credentials::from_config(&config, &env, fincode.clone()).unwrap();
    let task = creds.start().unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    let mut headers = HeaderMap::new();
    let grant = creds.apply(&mut headers).await.unwrap();
    assert_eq!(token_of(&headers), "t1");

    // Old enough to be stale; a request meets a 401 and renews, then is dropped (the app
    // went away, or its per-try timeout fired) while the refresh is in flight.
    tokio::time::sleep(Duration::from_secs(30)).await;
    let dropped = tokio::time::timeout(Duration::from_secs(1), creds.rejected(grant)).await;
    assert!(dropped.is_err(), "the refresh is still in flight");

    // The refresh completes anyway and its token is installed: r2 is not lost, and no
    // fresh login is needed.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let mut headers = HeaderMap::new();
    creds.apply(&mut headers).await.unwrap();
    assert_eq!(token_of(&headers), "t2");
    assert_eq!(
        fincode.calls(),
        [config.login_path.as_str(), config.refresh_path.as_str()]
    );
    task.abort();
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test(start_paused = true)]
async fn many_401s_on_a_fresh_token_start_no_renewal() {
    let dir = temp_dir();
    let (config, env) = login_config(&dir);
    let mut answers = vec![(Duration::ZERO, 200, issued("t0", "r0"))];
    for n in 1..=10 {
        answers.push((
            Duration::ZERO,
            200,
            issued(&format!("t{n}"), &format!("r{n}")),
        ));
    }
    let fincode = SlowFincode::new(answers);
    let creds = Credentials::from_config(&config, &env, fincode.clone()).unwrap();
    let task = creds.start().unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;

    // An endpoint answers 401 for its own reasons, request after request.
    for _ in 0..10 {
        let mut headers = HeaderMap::new();
        let grant = creds.apply(&mut headers).await.unwrap();
        let _ = creds.rejected(grant).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        fincode.calls(),
        [config.login_path.as_str()],
        "no refresh for a token issued seconds ago"
    );

    // Once the token is old enough, a 401 renews it: one refresh, however many 401s.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let mut headers = HeaderMap::new();
    let grant = creds.apply(&mut headers).await.unwrap();
    for _ in 0..5 {
        let _ = creds.rejected(grant).await;
    }
    assert_eq!(fincode.calls().len(), 2, "{:?}", fincode.calls());
    let mut headers = HeaderMap::new();
    creds.apply(&mut headers).await.unwrap();
    assert_eq!(token_of(&headers), "t1");
    task.abort();
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test(start_paused = true)]
async fn a_locked_account_is_not_hammered_and_is_tried_again_after_the_long_interval() {
    let dir = temp_dir();
    let (config, env) = login_config(&dir);
    let fincode = SlowFincode::new(vec![
        (Duration::ZERO, 403, "{}".into()),
        (Duration::ZERO, 200, issued("t1", "r1")),
    ]);
    let creds = Credentials::from_config(&config, &env, fincode.clone()).unwrap();
    let task = creds.start().unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    // Half an hour of requests: the backoff (2s .. 5m) would have tried a dozen times.
    for _ in 0..30 {
        let err = creds.apply(&mut HeaderMap::new()).await.unwrap_err();
        assert!(err.to_string().contains("403: account locked"), "{err}");
        tokio::time::sleep(Duration::from_mins(1)).await;
    }
    assert_eq!(fincode.calls().len(), 1, "one login attempt, then none");
    assert!(!creds.is_ready());
    let status = creds.status();
    assert!(status.rejected && !status.had_token, "{status:?}");
    let wait = status.next_attempt_in.unwrap();
    assert!(
        wait > Duration::from_mins(29) && wait <= Duration::from_mins(31),
        "{wait:?}"
    );

    // auth.login_retry_after_rejection (1h) later: one more attempt, which succeeds.
    tokio::time::sleep(Duration::from_mins(31)).await;
    assert_eq!(fincode.calls().len(), 2);
    assert!(creds.is_ready());
    task.abort();
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test(start_paused = true)]
async fn status_tells_readiness_whether_a_token_was_ever_held_and_what_is_wrong() {
    let dir = temp_dir();
    let (config, env) = login_config(&dir);
    let fincode = SlowFincode::new(vec![
        (Duration::ZERO, 503, "{}".into()),
        (Duration::ZERO, 200, issued("t1", "r1")),
        // The refresh is answered 502, and so is every login after it.
        (Duration::ZERO, 502, "{}".into()),
    ]);
    let creds = Credentials::from_config(&config, &env, fincode.clone()).unwrap();
    let pending = creds.status();
    assert!(!pending.had_token && pending.trouble.is_none());
    let task = creds.start().unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;

    let failing = creds.status();
    assert!(!failing.had_token && !failing.token_valid && !failing.rejected);
    let cause = failing.trouble.unwrap().to_string();
    assert!(cause.contains("HTTP 503"), "{cause}");
    assert!(failing.next_attempt_in.is_some());

    tokio::time::sleep(Duration::from_secs(5)).await;
    let fine = creds.status();
    assert!(fine.had_token && fine.token_valid && fine.trouble.is_none());

    // Refresh fails, then the token runs out: still "had a token", now with trouble.
    tokio::time::sleep(Duration::from_hours(2)).await;
    let expired = creds.status();
    assert!(expired.had_token && !expired.token_valid, "{expired:?}");
    assert!(expired.trouble.is_some(), "{expired:?}");

    // Static and none modes always have their credential.
    let env = Env::from_pairs([("TEST_FINCODE_TOKEN", "t")]);
    let status = build(&static_config(), &env).unwrap().status();
    assert!(status.had_token && status.token_valid && status.trouble.is_none());
    task.abort();
    std::fs::remove_dir_all(dir).ok();
}
