use std::sync::{Arc, Mutex};

use base64::Engine as _;

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

fn build(config: &AuthConfig, secrets: &Secrets) -> Result<Credentials, AuthError> {
    Credentials::from_config(config, secrets, Arc::new(NoTransport))
}

fn secret(value: &str) -> SecretString {
    SecretString::from(value.to_owned())
}

/// What `Config::secrets` resolves for [`static_config`] with the token set to `token`.
fn static_secrets(token: &str) -> Secrets {
    Secrets {
        api_token: Some(secret(token)),
        ..Secrets::default()
    }
}

/// What `Config::secrets` resolves in login mode (`public_key` from auth.public_key_env).
fn login_secrets(email: &str, password: &str, public_key: Option<&str>) -> Secrets {
    Secrets {
        login_email: Some(secret(email)),
        login_password: Some(secret(password)),
        public_key: public_key.map(secret),
        ..Secrets::default()
    }
}

#[tokio::test]
async fn static_token_replaces_app_credentials() {
    let secrets = static_secrets("CANARY-tok-123");
    let creds = build(&static_config(), &secrets).unwrap();
    let mut headers = HeaderMap::new();
    headers.insert("x-auth-token", HeaderValue::from_static("app-token"));
    headers.insert("authorization", HeaderValue::from_static("Bearer app"));
    headers.append("authorization", HeaderValue::from_static("Bearer twice"));
    headers.insert("proxy-authorization", HeaderValue::from_static("Basic app"));
    creds.apply(&mut headers).await.unwrap();
    assert!(headers.get("proxy-authorization").is_none());
    assert_eq!(headers.get_all("x-auth-token").iter().count(), 1);
    assert_eq!(headers["x-auth-token"], "CANARY-tok-123");
    assert!(headers["x-auth-token"].is_sensitive());
    assert!(headers.get("authorization").is_none());
    assert_eq!(headers["platform"], "fincode");
    assert!(creds.is_ready());
    assert!(!creds.renews_tokens());
    // Only a header the token does not replace itself.
    let mut headers = HeaderMap::new();
    headers.insert("proxy-authorization", HeaderValue::from_static("Basic app"));
    creds.apply(&mut headers).await.unwrap();
    assert!(headers.get("proxy-authorization").is_none());
    assert_eq!(headers["x-auth-token"], "CANARY-tok-123");
}

/// An unset variable is `Config::secrets`' to report, naming it (see the config crate's
/// `check_environment_reports_unset_token_variable_without_value`); secrets resolved
/// without the token are refused naming the key.
#[test]
fn unresolved_token_names_the_key_not_a_value() {
    let err = build(&static_config(), &Secrets::default()).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("auth.token_env"), "{text}");
}

#[test]
fn debug_never_shows_secrets() {
    let secrets = static_secrets("CANARY-tok-123");
    let creds = build(&static_config(), &secrets).unwrap();
    assert!(!format!("{creds:?}").contains("CANARY"));
}

#[test]
fn token_with_newline_is_refused_without_echo() {
    let secrets = static_secrets("CANARY\r\nx: y");
    let err = build(&static_config(), &secrets).unwrap_err();
    assert!(!err.to_string().contains("CANARY"));
}

#[tokio::test]
async fn none_mode_passes_app_credentials_through() {
    let creds = build(&AuthConfig::default(), &Secrets::default()).unwrap();
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
    let secrets = login_secrets("a@b.c", "CANARY-pw", Some("CANARY-not-a-key"));
    let err = build(&config, &secrets).unwrap_err();
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

fn login_config(dir: &std::path::Path) -> (AuthConfig, Secrets) {
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
    (config, login_secrets("ops@merchant.test", "pw", None))
}

#[tokio::test(start_paused = true)]
async fn failed_logins_back_off_and_a_success_makes_it_ready() {
    let dir = std::env::temp_dir().join(format!("fincode-auth-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let (config, secrets) = login_config(&dir);
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
    let creds = Credentials::from_config(&config, &secrets, transport.clone()).unwrap();
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

/// A token that cannot be a header value (a control character in it) is never sent: each
/// request fails with the cause, as often as it is asked, and nothing is echoed.
#[tokio::test(start_paused = true)]
async fn a_token_that_is_no_header_value_fails_every_request_and_is_never_sent() {
    let dir = temp_dir();
    let (config, secrets) = login_config(&dir);
    let transport = Arc::new(Scripted {
        calls: Mutex::default(),
        answers: Mutex::new(vec![(
            200,
            r#"{"data":{"token":"CANARY\u0001tok","refresh_token":"r1","expires_in":3600}}"#.into(),
        )]),
    });
    let creds = Credentials::from_config(&config, &secrets, transport.clone()).unwrap();
    let task = creds.start().unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    for _ in 0..2 {
        let mut headers = HeaderMap::new();
        let err = creds.apply(&mut headers).await.unwrap_err();
        let text = err.to_string();
        assert!(text.contains("not a valid header value"), "{text}");
        assert!(!text.contains("CANARY"), "{text}");
        assert!(!headers.contains_key("x-auth-token"));
    }
    assert_eq!(transport.calls.lock().unwrap().len(), 1, "one login");
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
                return Err(TransportError::new("no scripted answer left"));
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

/// Login-mode credentials over a [`SlowFincode`] giving `answers` in turn, with their
/// config and the directory holding the tenant key (for the test to remove at the end).
fn login_rig(
    answers: Vec<(Duration, u16, String)>,
) -> (
    std::path::PathBuf,
    AuthConfig,
    Arc<SlowFincode>,
    Credentials,
) {
    let dir = temp_dir();
    let (config, secrets) = login_config(&dir);
    let fincode = SlowFincode::new(answers);
    let creds = Credentials::from_config(&config, &secrets, fincode.clone()).unwrap();
    (dir, config, fincode, creds)
}

#[tokio::test(start_paused = true)]
async fn a_renewal_outlives_the_request_that_started_it() {
    let (dir, config, fincode, creds) = login_rig(vec![
        (Duration::ZERO, 200, issued("t1", "r1")),
        // FinCode consumes r1 at once but answers slowly.
        (Duration::from_secs(5), 200, issued("t2", "r2")),
    ]);
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

/// `apply_now` answers at once while the token is unexpired and gives way (`None`) once
/// it has expired with its renewal still in flight; `apply` then waits for the renewal.
#[tokio::test(start_paused = true)]
async fn apply_now_answers_while_the_token_lasts_and_gives_way_to_a_renewal() {
    let (dir, config, fincode, creds) = login_rig(vec![
        (
            Duration::ZERO,
            200,
            r#"{"data":{"token":"t1","refresh_token":"r1","expires_in":4}}"#.into(),
        ),
        // The refresh (due half-way through t1's life) is answered after t1 expired.
        (Duration::from_secs(10), 200, issued("t2", "r2")),
    ]);
    let task = creds.start().unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    let mut headers = HeaderMap::new();
    let grant = creds
        .apply_now(&mut headers)
        .expect("t1 is at hand")
        .unwrap();
    assert_eq!(token_of(&headers), "t1");

    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut headers = HeaderMap::new();
    assert!(creds.apply_now(&mut headers).is_none(), "t1 expired");
    assert!(!headers.contains_key("x-auth-token"), "nothing applied");
    let renewed = creds.apply(&mut headers).await.unwrap();
    assert_eq!(token_of(&headers), "t2");
    assert_ne!(renewed, grant);
    assert_eq!(
        fincode.calls(),
        [config.login_path.as_str(), config.refresh_path.as_str()]
    );
    task.abort();
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test(start_paused = true)]
async fn many_401s_on_a_fresh_token_start_no_renewal() {
    let mut answers = vec![(Duration::ZERO, 200, issued("t0", "r0"))];
    for n in 1..=10 {
        answers.push((
            Duration::ZERO,
            200,
            issued(&format!("t{n}"), &format!("r{n}")),
        ));
    }
    let (dir, config, fincode, creds) = login_rig(answers);
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
    let (dir, _, fincode, creds) = login_rig(vec![
        (Duration::ZERO, 403, "{}".into()),
        (Duration::ZERO, 200, issued("t1", "r1")),
    ]);
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
    let (dir, _, _, creds) = login_rig(vec![
        (Duration::ZERO, 503, "{}".into()),
        (Duration::ZERO, 200, issued("t1", "r1")),
        // The refresh is answered 502, and so is every login after it.
        (Duration::ZERO, 502, "{}".into()),
    ]);
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
    let secrets = static_secrets("t");
    let status = build(&static_config(), &secrets).unwrap().status();
    assert!(status.had_token && status.token_valid && status.trouble.is_none());
    task.abort();
    std::fs::remove_dir_all(dir).ok();
}

/// The [`AuthEvent::Schedule`]s an observer saw, as `(expires_at, renews_at)` in Unix
/// seconds (0 for no expiry yet).
fn schedules(events: &Mutex<Vec<AuthEvent>>) -> Vec<(u64, u64)> {
    let unix =
        |at: std::time::SystemTime| at.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|event| match *event {
            AuthEvent::Schedule {
                expires_at,
                renews_at,
            } => Some((expires_at.map_or(0, unix), unix(renews_at))),
            _ => None,
        })
        .collect()
}

/// The expiry gauge (`fincode_token_expiry_timestamp_seconds`) is fed by these events: it
/// follows each login and refresh, and keeps the last expiry through failed renewals.
/// Tokio's clock is paused and the wall clock is not, so lifetimes differ per answer
/// (FinCode's `expires_in`) to tell the tokens apart.
#[tokio::test(start_paused = true)]
async fn the_expiry_schedule_follows_login_and_refresh() {
    let answer = |token: &str, refresh: &str, lifetime: u64| {
        format!(
            r#"{{"data":{{"token":"{token}","refresh_token":"{refresh}","expires_in":{lifetime}}}}}"#
        )
    };
    let (dir, config, fincode, creds) = login_rig(vec![
        (Duration::ZERO, 503, "{}".into()),
        (Duration::ZERO, 200, answer("t1", "r1", 3600)),
        (Duration::ZERO, 200, answer("t2", "r2", 7200)),
        (Duration::ZERO, 502, "{}".into()),
    ]);
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = events.clone();
    creds.observe(Arc::new(move |event| seen.lock().unwrap().push(event)));
    let start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let near = |got: u64, want: u64| got.abs_diff(want) <= 2;
    let task = creds.start().unwrap();

    // The first login fails: no expiry yet, the next attempt within the backoff (2 s).
    tokio::time::sleep(Duration::from_millis(10)).await;
    let after_failure = schedules(&events);
    assert_eq!(after_failure.len(), 1, "{after_failure:?}");
    assert_eq!(after_failure[0].0, 0, "no token, no expiry");
    assert!(near(after_failure[0].1, start + 1), "{after_failure:?}");

    // The login succeeds: expires in an hour, refreshed 5 minutes (auth.refresh_before)
    // ahead.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let login = *schedules(&events).last().unwrap();
    assert!(near(login.0, start + 3600), "{login:?}");
    assert!(near(login.1, start + 3600 - 300), "{login:?}");

    // The refresh at 55 min installs a two-hour token.
    tokio::time::sleep(Duration::from_mins(55)).await;
    let refreshed = *schedules(&events).last().unwrap();
    assert_eq!(
        fincode.calls(),
        [
            config.login_path.as_str(),
            config.login_path.as_str(),
            config.refresh_path.as_str()
        ]
    );
    assert!(near(refreshed.0, start + 7200), "{refreshed:?}");
    assert!(near(refreshed.1, start + 7200 - 300), "{refreshed:?}");

    // The next refresh fails, and so does every try after it, past the expiry: the
    // expiry stays, the renewal is the next try, within the backoff's cap of now (the
    // wall clock, which the paused tokio clock does not move).
    let count = schedules(&events).len();
    tokio::time::sleep(Duration::from_hours(2)).await;
    let failing = schedules(&events);
    assert!(failing.len() > count + 1, "{failing:?}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for &(expires, renews) in &failing[count..] {
        assert_eq!(expires, refreshed.0, "{failing:?}");
        assert!(
            renews >= start && renews <= now + config.login_backoff_max.as_secs() + 1,
            "{failing:?}"
        );
    }
    task.abort();
    std::fs::remove_dir_all(dir).ok();
}

// === Cross-checks: FinCode's OAEP, as independent implementations do it ===

/// A FinCode that refuses every login (401) and keeps what it was sent: enough to see the
/// `currentPassword` the sidecar would put on the wire.
#[derive(Default)]
struct Recording {
    requests: Mutex<Vec<AuthRequest>>,
}

impl Transport for Recording {
    fn send(&self, request: AuthRequest) -> BoxFuture<'_, Result<AuthResponse, TransportError>> {
        self.requests.lock().unwrap().push(request);
        Box::pin(async {
            Ok(AuthResponse {
                status: StatusCode::UNAUTHORIZED,
                body: Bytes::from_static(b"{}"),
            })
        })
    }
}

/// The password the cross-checks encrypt; long enough to be more than a block of anything.
const CROSS_CHECK_PASSWORD: &str = "CANARY-pw-Ωmega-7c1e";

/// A tenant key pair on disk: the private half as PKCS#8 PEM (for openssl and Java), the public
/// half as FinCode's dashboard hands it out (bare Base64 of the DER SPKI).
struct TenantKey {
    dir: tempfile::TempDir,
    private: rsa::RsaPrivateKey,
}

impl TenantKey {
    fn generate() -> Self {
        use rsa::pkcs8::{EncodePrivateKey as _, EncodePublicKey as _, LineEnding};
        let dir = tempfile::tempdir().unwrap();
        let private = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
        let pem = private.to_pkcs8_pem(LineEnding::LF).unwrap();
        std::fs::write(dir.path().join("private.pem"), pem.as_bytes()).unwrap();
        let public = private.to_public_key();
        std::fs::write(
            dir.path().join("public.pem"),
            public.to_public_key_pem(LineEnding::LF).unwrap(),
        )
        .unwrap();
        let der = public.to_public_key_der().unwrap();
        std::fs::write(
            dir.path().join("public.b64"),
            base64::engine::general_purpose::STANDARD.encode(der.as_bytes()),
        )
        .unwrap();
        Self { dir, private }
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    fn login_config(&self) -> AuthConfig {
        AuthConfig {
            mode: AuthMode::Login,
            email_env: Some("E".into()),
            password_env: Some("P".into()),
            public_key_file: Some(self.path("public.pem")),
            ..AuthConfig::default()
        }
    }
}

/// The headers of the sidecar's first login, and the ciphertext (raw bytes) it sends as
/// `currentPassword`.
async fn first_login(config: &AuthConfig) -> (HeaderMap, Vec<u8>) {
    let secrets = login_secrets("ops@merchant.test", CROSS_CHECK_PASSWORD, None);
    let transport = Arc::new(Recording::default());
    let creds = Credentials::from_config(config, &secrets, transport.clone()).unwrap();
    let task = creds.start().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let (headers, body) = loop {
        if let Some(request) = transport.requests.lock().unwrap().first() {
            break (request.headers.clone(), request.body.clone());
        }
        assert!(std::time::Instant::now() < deadline, "no login was sent");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    task.abort();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let encoded = json["currentPassword"].as_str().unwrap();
    let ciphertext = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap();
    (headers, ciphertext)
}

#[tokio::test]
async fn login_calls_carry_the_documented_device_id() {
    let key = TenantKey::generate();
    let (headers, _) = first_login(&key.login_config()).await;
    assert_eq!(headers["uuid"], "200", "the API reference: \"Use 200\"");
}

/// Runs an independent implementation (openssl, java). `None`, said loudly, when the tool is
/// not installed, so a developer without a JDK can still run the suite; under CI a missing
/// tool is a failure, because the cross-check is the point.
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

/// `openssl pkeyutl -decrypt` with OAEP, SHA-256 as the digest and `mgf1` as the MGF1 hash:
/// the plaintext, or openssl's complaint; `None` when openssl is not installed.
fn openssl_decrypt(
    key: &TenantKey,
    ciphertext: &[u8],
    mgf1: &str,
) -> Option<Result<String, String>> {
    let input = key.path(&format!("ct-{mgf1}.bin"));
    std::fs::write(&input, ciphertext).unwrap();
    let mgf1_opt = format!("rsa_mgf1_md:{mgf1}");
    let private = key.path("private.pem");
    let args: Vec<&std::ffi::OsStr> = vec![
        "pkeyutl".as_ref(),
        "-decrypt".as_ref(),
        "-inkey".as_ref(),
        private.as_os_str(),
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
    Some(answer_of(output))
}

/// A tool's answer: what it printed when it succeeded, its complaint otherwise.
fn answer_of(output: std::process::Output) -> Result<String, String> {
    if output.status.success() {
        Ok(String::from_utf8(output.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// The Java program FinCode's guide describes (see `tests/java/FincodeOaep.java`), run with
/// the JDK's single-file source launcher.
fn java_oaep(args: &[&std::ffi::OsStr]) -> Option<Result<String, String>> {
    let program = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/java/FincodeOaep.java");
    let mut all: Vec<&std::ffi::OsStr> = vec![program.as_ref()];
    all.extend_from_slice(args);
    let output = run_tool("java", &all)?;
    Some(answer_of(output))
}

#[tokio::test]
async fn default_login_ciphertext_is_what_openssl_decrypts_as_oaep_sha256_mgf1_sha1() {
    let key = TenantKey::generate();
    assert_openssl_decrypts_only_as(&key, &key.login_config(), "sha1", "sha256").await;
}

#[tokio::test]
async fn oaep_mgf1_sha256_setting_is_what_openssl_decrypts_as_mgf1_sha256_only() {
    let key = TenantKey::generate();
    let config = AuthConfig {
        oaep_mgf1: fincode_config::OaepMgf1::Sha256,
        ..key.login_config()
    };
    assert_openssl_decrypts_only_as(&key, &config, "sha256", "sha1").await;
}

/// Asserts that openssl decrypts the password of a first login under `config` with OAEP
/// (SHA-256) and MGF1 hash `mgf1`, and refuses it with `other`; skipped (said loudly)
/// when openssl is not installed.
async fn assert_openssl_decrypts_only_as(
    key: &TenantKey,
    config: &AuthConfig,
    mgf1: &str,
    other: &str,
) {
    let (_, ciphertext) = first_login(config).await;
    let Some(decrypted) = openssl_decrypt(key, &ciphertext, mgf1) else {
        return;
    };
    let name = |hash: &str| format!("MGF1-{}", hash.to_uppercase());
    assert_eq!(
        decrypted.as_deref(),
        Ok(CROSS_CHECK_PASSWORD),
        "{}",
        name(mgf1)
    );
    let refused = openssl_decrypt(key, &ciphertext, other).unwrap();
    assert!(refused.is_err(), "must not decrypt as {}", name(other));
}

#[tokio::test]
async fn default_login_ciphertext_is_what_javas_default_oaep_sha256_decrypts() {
    let key = TenantKey::generate();
    let (_, ciphertext) = first_login(&key.login_config()).await;
    let encoded = base64::engine::general_purpose::STANDARD.encode(&ciphertext);
    let private = key.path("private.pem");
    let Some(plain) = java_oaep(&["decrypt".as_ref(), private.as_os_str(), encoded.as_ref()])
    else {
        return;
    };
    assert_eq!(plain.as_deref(), Ok(CROSS_CHECK_PASSWORD));
}

// === Public key forms, device id, Debug ===

#[tokio::test]
async fn public_key_is_accepted_as_bare_base64_pem_spki_and_pem_pkcs1_in_file_and_variable() {
    use rsa::pkcs1::EncodeRsaPublicKey as _;
    let key = TenantKey::generate();
    let bare = std::fs::read_to_string(key.path("public.b64")).unwrap();
    // The dashboard's form, also wrapped at 64 columns with CRLF and stray blanks, as a copy
    // and paste leaves it.
    let mut wrapped = String::new();
    for line in bare.as_bytes().chunks(64) {
        wrapped.push_str("  ");
        wrapped.push_str(std::str::from_utf8(line).unwrap());
        wrapped.push_str("\r\n");
    }
    let pkcs1 = key
        .private
        .to_public_key()
        .to_pkcs1_pem(rsa::pkcs8::LineEnding::CRLF)
        .unwrap();
    let spki = std::fs::read_to_string(key.path("public.pem")).unwrap();
    for (name, text) in [
        ("bare", bare.as_str()),
        ("wrapped", wrapped.as_str()),
        ("pkcs1", pkcs1.as_str()),
        ("spki", spki.as_str()),
    ] {
        let file = key.path(&format!("{name}.key"));
        std::fs::write(&file, text).unwrap();
        let in_file = AuthConfig {
            public_key_file: Some(file),
            ..key.login_config()
        };
        let in_variable = AuthConfig {
            public_key_file: None,
            public_key_env: Some("K".into()),
            ..key.login_config()
        };
        for config in [in_file, in_variable] {
            // Used by the config that names auth.public_key_env (a file needs none).
            let secrets = login_secrets("a@b.c", "pw", Some(text));
            let built = Credentials::from_config(&config, &secrets, Arc::new(Recording::default()));
            assert!(built.is_ok(), "{name}: {}", built.unwrap_err());
        }
    }
}

#[test]
fn an_unusable_public_key_names_the_key_and_the_accepted_forms() {
    let key = TenantKey::generate();
    let file = key.path("junk.key");
    std::fs::write(&file, "CANARY-junk").unwrap();
    let config = AuthConfig {
        public_key_file: Some(file),
        ..key.login_config()
    };
    let secrets = login_secrets("a@b.c", "pw", None);
    let err = build(&config, &secrets).unwrap_err().to_string();
    assert!(err.contains("auth.public_key_file"), "{err}");
    assert!(err.contains("bare Base64"), "{err}");
    assert!(err.contains("PEM"), "{err}");
    assert!(!err.contains("CANARY"), "{err}");
}

#[tokio::test]
async fn static_mode_sends_the_documented_device_id() {
    let secrets = static_secrets("CANARY-tok-123");
    let creds = build(&static_config(), &secrets).unwrap();
    let mut headers = HeaderMap::new();
    creds.apply(&mut headers).await.unwrap();
    assert_eq!(headers["uuid"], "200", "the API reference: \"Use 200\"");
}

#[tokio::test]
async fn the_device_id_is_configurable() {
    let secrets = static_secrets("CANARY-tok-123");
    let config = AuthConfig {
        device_id: "device-7".to_owned(),
        ..static_config()
    };
    let creds = build(&config, &secrets).unwrap();
    let mut headers = HeaderMap::new();
    creds.apply(&mut headers).await.unwrap();
    assert_eq!(headers["uuid"], "device-7");
}

#[test]
fn debug_of_auth_calls_never_shows_the_body() {
    let mut headers = HeaderMap::new();
    let mut token = HeaderValue::from_static("CANARY-tok-9");
    token.set_sensitive(true);
    headers.insert("x-auth-token", token);
    let request = AuthRequest {
        method: Method::PUT,
        path: "/securitymanagement/login".to_owned(),
        headers,
        body: Bytes::from_static(br#"{"email":"a@b.c","currentPassword":"CANARY-cipher"}"#),
    };
    let text = format!("{request:?}");
    assert!(!text.contains("CANARY"), "{text}");
    assert!(text.contains("/securitymanagement/login"), "{text}");
    let response = AuthResponse {
        status: StatusCode::OK,
        body: Bytes::from_static(br#"{"data":{"token":"CANARY-jwt","refresh_token":"CANARY-r"}}"#),
    };
    let text = format!("{response:?}");
    assert!(!text.contains("CANARY"), "{text}");
    assert!(text.contains("200"), "{text}");
}
