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
    let transport = Arc::new(Scripted {
        calls: Mutex::default(),
        answers: Mutex::new(vec![
            (401, "{}".into()),
            (401, "{}".into()),
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
    assert!(err.to_string().contains("401"), "{err}");
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
