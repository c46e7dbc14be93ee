//! `fincode-sidecar check`: exit 0 for a valid config, 2 with every problem named.
#![allow(clippy::unwrap_used)]

mod support;

use std::process::Command;

use support::{BIN, run_binary};

const CANARY: &str = "CANARY-s3cr3t-77aa";

fn check(toml: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, toml).unwrap();
    check_path(&path)
}

fn check_path(path: &std::path::Path) -> (i32, String) {
    let (code, text) = run_binary(
        Command::new(BIN)
            .args(["check", "--config"])
            .arg(path)
            .env_remove("RUST_LOG"),
    );
    (code.unwrap_or(-1), text)
}

const VALID: &str = r#"
[upstream]
base_url = "https://acme.fincode.tech/api/v6/services"
"#;

#[test]
fn the_example_config_passes() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.toml");
    let (code, out) = check_path(std::path::Path::new(path));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("valid"), "{out}");
}

#[test]
fn a_minimal_config_passes() {
    let (code, out) = check(VALID);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn plain_http_upstream_is_refused() {
    let (code, out) =
        check("[upstream]\nbase_url = \"http://acme.fincode.tech/api/v6/services\"\n");
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("upstream.base_url"), "{out}");
    assert!(out.contains("https"), "{out}");
    // Allowed, loudly, only when the operator opts in.
    let (code, out) =
        check("[upstream]\nbase_url = \"http://127.0.0.1:9/api\"\nallow_insecure = true\n");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("warning"), "{out}");
}

#[test]
fn each_kind_of_bad_config_names_its_key() {
    let cases: &[(&str, &str)] = &[
        ("[upstream]\n", "upstream.base_url"),
        (
            &format!("{VALID}connect_timeout = \"five\"\n"),
            "upstream.connect_timeout",
        ),
        (
            &format!("{VALID}pool_max_idle_per_host = -1\n"),
            "upstream.pool_max_idle_per_host",
        ),
        (&format!("{VALID}http2 = \"yes\"\n"), "upstream.http2"),
        (
            &format!("{VALID}ca_file = \"/nonexistent/ca.pem\"\n"),
            "upstream.ca_file",
        ),
        (&format!("{VALID}cafile = \"/x\"\n"), "upstream.cafile"),
        (
            &format!("{VALID}[listen]\negress = \"not an address\"\n"),
            "listen.egress",
        ),
        (
            &format!("{VALID}[limits]\nmax_request_body_bytes = 0\n"),
            "limits.max_request_body_bytes",
        ),
        (
            &format!("{VALID}[auth]\nmode = \"static\"\n"),
            "auth.token_env",
        ),
        (&format!("{VALID}[auth]\nmode = \"magic\"\n"), "auth.mode"),
        (&format!("{VALID}[log]\nlevel = \"loud\"\n"), "log.level"),
        (
            &format!("{VALID}[auth]\nmode = \"login\"\n"),
            "auth.email_env",
        ),
        (
            &format!("{VALID}[auth]\nmode = \"login\"\n"),
            "auth.password_env",
        ),
        (
            &format!("{VALID}[auth]\nmode = \"login\"\n"),
            "auth.public_key_file",
        ),
        (
            &format!("{VALID}[auth]\npublic_key_file = \"/nonexistent.pem\"\n"),
            "auth.public_key_file",
        ),
        (
            &format!("{VALID}[auth]\nmode = \"login\"\nrefresh_before = \"2h\"\n"),
            "auth.refresh_before",
        ),
        (
            &format!("{VALID}[auth]\nlogin_path = \"login\"\n"),
            "auth.login_path",
        ),
        ("[upstream\nbase_url = 1", "line"),
    ];
    for (toml, key) in cases {
        let (code, out) = check(toml);
        assert_eq!(code, 2, "config:\n{toml}\noutput:\n{out}");
        assert!(out.contains(key), "expected {key} named in:\n{out}");
        assert!(out.contains("fix"), "expected a fix in:\n{out}");
    }
}

#[test]
fn every_problem_is_reported_at_once() {
    let (code, out) = check(&format!(
        "{VALID}connect_timeout = \"five\"\nhttp2 = \"yes\"\n[limits]\nmax_request_body_bytes = 0\n[nonsense]\nx = 1\n"
    ));
    assert_eq!(code, 2);
    for key in [
        "upstream.connect_timeout",
        "upstream.http2",
        "limits.max_request_body_bytes",
        "nonsense",
    ] {
        assert!(out.contains(key), "{key} missing from:\n{out}");
    }
}

#[test]
fn a_literal_secret_is_refused_and_never_echoed() {
    for toml in [
        format!("{VALID}[auth]\nmode = \"static\"\ntoken = \"{CANARY}\"\n"),
        format!("{VALID}[auth]\nmode = \"static\"\ntoken_env = \"{CANARY}-not-a-name\"\n"),
        format!("[upstream]\nbase_url = \"https://user:{CANARY}@acme.fincode.tech/api\"\n"),
        format!("{VALID}[auth]\npassword = \"{CANARY}\"\n"),
    ] {
        let (code, out) = check(&toml);
        assert_eq!(code, 2, "{out}");
        assert!(
            out.contains("auth.") || out.contains("upstream.base_url"),
            "{out}"
        );
        assert!(!out.contains(CANARY), "secret echoed:\n{out}");
    }
}

#[test]
fn a_missing_file_names_the_path() {
    let (code, out) = check_path(std::path::Path::new("/nonexistent/fincode.toml"));
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("/nonexistent/fincode.toml"), "{out}");
}

#[test]
fn run_refuses_an_invalid_config_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(
        &path,
        "[upstream]\nbase_url = \"http://acme.fincode.tech\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("upstream.base_url"));
}

#[test]
fn run_refuses_a_missing_secret_variable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(
        &path,
        format!("{VALID}[auth]\nmode = \"static\"\ntoken_env = \"FINCODE_TEST_UNSET_TOKEN\"\n"),
    )
    .unwrap();
    let (code, text) = run_binary(
        Command::new(BIN)
            .args(["run", "--config"])
            .arg(&path)
            .env_remove("FINCODE_TEST_UNSET_TOKEN"),
    );
    assert_eq!(code, Some(2));
    assert!(text.contains("FINCODE_TEST_UNSET_TOKEN"), "{text}");
}

#[test]
fn a_login_config_passes_and_names_unset_secret_variables_as_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.pem");
    std::fs::write(
        &key,
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
    )
    .unwrap();
    let (code, out) = check(&format!(
        "{VALID}[auth]\nmode = \"login\"\nemail_env = \"FINCODE_TEST_UNSET_EMAIL\"\npassword_env = \"FINCODE_TEST_UNSET_PASSWORD\"\npublic_key_file = \"{}\"\n",
        key.display()
    ));
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("warning") && out.contains("FINCODE_TEST_UNSET_PASSWORD"),
        "{out}"
    );
}

#[test]
fn an_unset_hash_key_variable_is_named_by_check_and_refused_by_run() {
    // `check` and `run` read secrets through one resolver: what `run` refuses, `check`
    // names (as a warning, since `check` often runs where the secrets are not mounted).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(
        &path,
        format!("{VALID}[redact]\nhash_key_env = \"FINCODE_TEST_UNSET_HASH_KEY\"\n"),
    )
    .unwrap();
    let (code, out) = run_binary(
        Command::new(BIN)
            .args(["check", "--config"])
            .arg(&path)
            .env_remove("FINCODE_TEST_UNSET_HASH_KEY"),
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("warning: redact.hash_key_env") && out.contains("FINCODE_TEST_UNSET_HASH_KEY"),
        "{out}"
    );
    let (code, text) = run_binary(
        Command::new(BIN)
            .args(["run", "--config"])
            .arg(&path)
            .env_remove("FINCODE_TEST_UNSET_HASH_KEY"),
    );
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("redact.hash_key_env"), "{text}");
}
