use super::*;

fn static_config() -> AuthConfig {
    AuthConfig {
        mode: AuthMode::Static,
        token_env: Some("TEST_FINCODE_TOKEN".into()),
        ..AuthConfig::default()
    }
}

#[test]
fn static_token_replaces_app_credentials() {
    let env = Env::from_pairs([("TEST_FINCODE_TOKEN", "CANARY-tok-123")]);
    let creds = Credentials::from_config(&static_config(), &env).unwrap();
    let mut headers = HeaderMap::new();
    headers.insert("x-auth-token", HeaderValue::from_static("app-token"));
    headers.insert("authorization", HeaderValue::from_static("Bearer app"));
    creds.apply(&mut headers);
    assert_eq!(headers.get_all("x-auth-token").iter().count(), 1);
    assert_eq!(headers["x-auth-token"], "CANARY-tok-123");
    assert!(headers["x-auth-token"].is_sensitive());
    assert!(headers.get("authorization").is_none());
    assert_eq!(headers["platform"], "fincode");
}

#[test]
fn missing_env_names_the_variable_not_a_value() {
    let err = Credentials::from_config(&static_config(), &Env::from_pairs::<_, &str, &str>([]))
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("TEST_FINCODE_TOKEN"), "{text}");
    assert!(text.contains("auth.token_env"), "{text}");
}

#[test]
fn debug_never_shows_the_token() {
    let env = Env::from_pairs([("TEST_FINCODE_TOKEN", "CANARY-tok-123")]);
    let creds = Credentials::from_config(&static_config(), &env).unwrap();
    assert!(!format!("{creds:?}").contains("CANARY"));
}

#[test]
fn token_with_newline_is_refused_without_echo() {
    let env = Env::from_pairs([("TEST_FINCODE_TOKEN", "CANARY\r\nx: y")]);
    let err = Credentials::from_config(&static_config(), &env).unwrap_err();
    assert!(!err.to_string().contains("CANARY"));
}

#[test]
fn none_mode_passes_app_credentials_through() {
    let creds = Credentials::from_config(
        &AuthConfig::default(),
        &Env::from_pairs::<_, &str, &str>([]),
    )
    .unwrap();
    let mut headers = HeaderMap::new();
    headers.insert("x-auth-token", HeaderValue::from_static("app-token"));
    creds.apply(&mut headers);
    assert_eq!(headers["x-auth-token"], "app-token");
    assert!(!creds.is_injecting());
}
