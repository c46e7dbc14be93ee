#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::Write as _;
use std::time::Duration;

use http::Uri;

use super::*;

const BASE_URL: &str = "https://acme.fincode.tech/api/v6/services";
const CANARY: &str = "CANARY-s3cr3t-9f8e";
const EXAMPLE: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../config.example.toml"
));

fn minimal() -> String {
    format!("[upstream]\nbase_url = \"{BASE_URL}\"\n")
}

/// `minimal()` followed by `extra`.
fn minimal_and(extra: &str) -> String {
    format!("{}{extra}", minimal())
}

fn env(pairs: &[(&str, &str)]) -> Env {
    Env::from_pairs(pairs.iter().copied())
}

fn load(text: &str) -> Result<(Config, Vec<Problem>), ConfigError> {
    Config::from_toml_str(text, &Env::default())
}

#[track_caller]
fn load_ok(text: &str, vars: &[(&str, &str)]) -> (Config, Vec<Problem>) {
    match Config::from_toml_str(text, &env(vars)) {
        Ok(loaded) => loaded,
        Err(err) => panic!("expected a valid config, got:\n{err}"),
    }
}

/// Loads text expected to be invalid and returns its error problems (warnings dropped).
#[track_caller]
fn errors(text: &str, vars: &[(&str, &str)]) -> Vec<Problem> {
    match Config::from_toml_str(text, &env(vars)) {
        Ok((config, _)) => panic!("expected problems, got {config:?}"),
        Err(err) => err
            .problems()
            .iter()
            .filter(|p| p.is_error())
            .cloned()
            .collect(),
    }
}

/// The one problem `text` has: at `key`, its message saying `says`.
#[track_caller]
fn only_problem(text: &str, key: &str, says: &str) -> Problem {
    let mut problems = errors(text, &[]);
    assert_eq!(keys(&problems), [key], "{problems:#?}");
    assert!(problems[0].message.contains(says), "{}", problems[0]);
    problems.remove(0)
}

/// The one problem `text` has once `var` is set to `value`: at `key`, blamed on `var`.
#[track_caller]
fn env_problem(text: &str, var: &str, value: &str, key: &str) -> Problem {
    let mut problems = errors(text, &[(var, value)]);
    assert_eq!(keys(&problems), [key]);
    assert_eq!(problems[0].source, Source::Env(var.to_owned()));
    problems.remove(0)
}

fn keys(problems: &[Problem]) -> Vec<&str> {
    problems.iter().map(|p| p.key.as_str()).collect()
}

/// Asserts the canary appears nowhere an operator or a log could see it.
#[track_caller]
fn assert_no_canary(text: &str, vars: &[(&str, &str)]) -> ConfigError {
    let err = Config::from_toml_str(text, &env(vars)).unwrap_err();
    let display = err.to_string();
    let debug = format!("{err:?}");
    assert!(
        !display.contains(CANARY),
        "Display leaks the secret:\n{display}"
    );
    assert!(!debug.contains(CANARY), "Debug leaks the secret:\n{debug}");
    for problem in err.problems() {
        assert!(!problem.to_string().contains(CANARY));
        assert!(!format!("{problem:?}").contains(CANARY));
    }
    err
}

fn pem_file(contents: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(contents.as_bytes()).unwrap();
    file
}

const PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
const PEM_KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n";

// --- defaults and the example file ---

#[test]
fn minimal_file_gets_every_default() {
    let (config, warnings) = load_ok(&minimal(), &[]);
    assert_eq!(config, Config::with_base_url(Uri::from_static(BASE_URL)));
    assert_eq!(config.listen.egress, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(config.listen.admin, "0.0.0.0:9090".parse().unwrap());
    assert_eq!(config.upstream.connect_timeout, Duration::from_secs(5));
    assert_eq!(config.upstream.request_timeout, Duration::from_secs(30));
    assert_eq!(config.upstream.pool_idle_timeout, Duration::from_secs(30));
    assert_eq!(config.upstream.pool_max_idle_per_host, 64);
    assert!(config.upstream.http2 && !config.upstream.allow_insecure);
    assert_eq!(config.upstream.ca_file, None);
    assert_eq!(config.limits.max_request_body_bytes, 10_485_760);
    assert_eq!(config.limits.max_request_header_bytes, 65_536);
    assert_eq!(config.auth.mode, AuthMode::None);
    assert_eq!(config.auth.header, "x-auth-token");
    assert_eq!(config.auth.token_env, None);
    assert_eq!(config.auth.extra_headers["platform"], "fincode");
    // What FinCode documents: MGF1-SHA1 (Java's default provider) and device id "200".
    assert_eq!(config.auth.oaep_mgf1, OaepMgf1::Sha1);
    assert_eq!(config.auth.device_id, "200");
    assert_eq!(config.log.level, "info");
    assert_eq!(config.log.format, LogFormat::Json);
    // Mode "none" works but weakens the posture: one warning, nothing else.
    assert_eq!(keys(&warnings), ["auth.mode"]);
    assert_eq!(warnings[0].severity, Severity::Warning);
    assert!(warnings[0].message.contains("the app must send its own"));
}

#[test]
fn example_file_loads_without_errors_and_matches_the_defaults() {
    let (config, warnings) = load_ok(EXAMPLE, &[]);
    assert!(warnings.iter().all(|p| !p.is_error()));
    assert_eq!(config, Config::with_base_url(Uri::from_static(BASE_URL)));
}

#[test]
fn example_file_documents_every_key() {
    // Collect `key =` and `# key =` lines per `[section]` of the example.
    let mut documented = Vec::new();
    let mut section = String::new();
    for line in EXAMPLE.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
            documented.push(section.clone());
        } else if let Some((key, _)) = line.trim_start_matches("# ").split_once(" = ") {
            documented.push(format!("{section}.{key}"));
        }
    }
    let known = load::known_keys();
    assert!(
        known.len() > 20,
        "schema walk found too few keys: {known:?}"
    );
    let missing: Vec<_> = known.iter().filter(|k| !documented.contains(k)).collect();
    assert!(
        missing.is_empty(),
        "config.example.toml does not document {missing:?}"
    );
}

// --- env overlay ---

#[test]
fn env_overlay_sets_strings_numbers_bools_and_nested_maps() {
    let (config, _) = load_ok(
        "",
        &[
            (
                "FINCODE_SIDECAR__UPSTREAM__BASE_URL",
                "https://other.fincode.tech/api/",
            ),
            ("FINCODE_SIDECAR__UPSTREAM__POOL_MAX_IDLE_PER_HOST", "9"),
            ("FINCODE_SIDECAR__UPSTREAM__HTTP2", "false"),
            ("FINCODE_SIDECAR__UPSTREAM__CONNECT_TIMEOUT", "250ms"),
            ("FINCODE_SIDECAR__LISTEN__EGRESS", "127.0.0.1:18080"),
            ("FINCODE_SIDECAR__AUTH__EXTRA_HEADERS__X_MERCHANT", "m-42"),
            // Case-insensitive, and a quoted TOML string is unquoted.
            ("fincode_sidecar__log__format", "\"text\""),
            ("UNRELATED", "ignored"),
        ],
    );
    assert_eq!(config.upstream.base_url, "https://other.fincode.tech/api");
    assert_eq!(config.upstream.pool_max_idle_per_host, 9);
    assert!(!config.upstream.http2);
    assert_eq!(config.upstream.connect_timeout, Duration::from_millis(250));
    assert_eq!(config.listen.egress.port(), 18080);
    assert_eq!(config.log.format, LogFormat::Text);
    // Entries are added to the default map, not replacing it.
    assert_eq!(config.auth.extra_headers["x_merchant"], "m-42");
    assert_eq!(config.auth.extra_headers["platform"], "fincode");
}

#[test]
fn env_overlay_overrides_the_file() {
    let text = format!(
        "{}[auth]\nextra_headers = {{ platform = \"a\" }}\n",
        minimal()
    );
    let (config, _) = load_ok(
        &text,
        &[
            (
                "FINCODE_SIDECAR__UPSTREAM__BASE_URL",
                "https://b.fincode.tech",
            ),
            ("FINCODE_SIDECAR__AUTH__EXTRA_HEADERS__PLATFORM", "fincode"),
        ],
    );
    assert_eq!(config.upstream.base_url, "https://b.fincode.tech/");
    assert_eq!(config.upstream.base_path(), "");
    assert_eq!(config.auth.extra_headers["platform"], "fincode");
}

#[test]
fn env_value_of_the_wrong_toml_type_is_retried_as_a_string() {
    // `true` reads as a boolean, but here it is meant as a variable name.
    let text = minimal_and("[auth]\nmode = \"static\"\n");
    let (config, _) = load_ok(&text, &[("FINCODE_SIDECAR__AUTH__TOKEN_ENV", "true")]);
    assert_eq!(config.auth.token_env.as_deref(), Some("true"));
}

#[test]
fn env_problems_name_the_variable() {
    let var = "FINCODE_SIDECAR__UPSTREAM__CONNECT_TIMEOUT";
    let problem = env_problem(&minimal(), var, "five", "upstream.connect_timeout");
    assert_eq!(problem.value.as_deref(), Some("\"five\""));
    let shown = problem.to_string();
    assert!(
        shown.starts_with(&format!(
            "error: upstream.connect_timeout (from {var}) = \"five\": expected a duration"
        )),
        "{shown}"
    );
}

#[test]
fn malformed_overlay_variables_are_reported() {
    let problems = errors(
        &minimal_and("http2 = true\n"),
        &[
            ("FINCODE_SIDECAR__UPSTREAM____HTTP2", "true"),
            ("FINCODE_SIDECAR__UPSTREAM__HTTP2__X", "1"),
            ("FINCODE_SIDECAR__UPSTREAM__HTTP3", "true"),
        ],
    );
    assert_eq!(
        keys(&problems),
        ["upstream.http2.x", "upstream..http2", "upstream.http3"],
        "{problems:#?}"
    );
    assert!(problems.iter().all(|p| matches!(p.source, Source::Env(_))));
    assert!(
        problems[0]
            .message
            .contains("`upstream.http2`, which is not a table")
    );
    assert!(
        problems[2]
            .message
            .contains("did you mean `upstream.http2`?")
    );
}

// --- bad values ---

#[test]
fn each_bad_value_names_its_key_and_what_was_expected() {
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "listen",
            "egress = \"localhost:8080\"",
            "listen.egress",
            "IP address and port",
        ),
        (
            "listen",
            "admin = 9090",
            "listen.admin",
            "IP address and port",
        ),
        (
            "upstream",
            "connect_timeout = \"five\"",
            "upstream.connect_timeout",
            "duration such as \"5s\"",
        ),
        (
            "upstream",
            "request_timeout = 30",
            "upstream.request_timeout",
            "duration",
        ),
        (
            "upstream",
            "pool_idle_timeout = \"0s\"",
            "upstream.pool_idle_timeout",
            "greater than zero",
        ),
        (
            "upstream",
            "pool_max_idle_per_host = -1",
            "upstream.pool_max_idle_per_host",
            "non-negative integer",
        ),
        (
            "upstream",
            "http2 = \"yes\"",
            "upstream.http2",
            "expected true or false",
        ),
        (
            "upstream",
            "allow_insecure = 1",
            "upstream.allow_insecure",
            "expected true or false",
        ),
        (
            "limits",
            "max_request_body_bytes = 0",
            "limits.max_request_body_bytes",
            "greater than 0",
        ),
        (
            "limits",
            "max_request_header_bytes = 512",
            "limits.max_request_header_bytes",
            "between 1024 and 1048576",
        ),
        (
            "limits",
            "max_request_header_bytes = 2000000",
            "limits.max_request_header_bytes",
            "between 1024 and 1048576",
        ),
        (
            "auth",
            "mode = \"oauth\"",
            "auth.mode",
            "\"login\", \"static\" or \"none\"",
        ),
        (
            "auth",
            "oaep_mgf1 = \"md5\"",
            "auth.oaep_mgf1",
            "expected \"sha1\" or \"sha256\"",
        ),
        (
            "auth",
            "header = \"X Auth\"",
            "auth.header",
            "not a valid HTTP header name",
        ),
        (
            "auth",
            "header = \"Host\"",
            "auth.header",
            "manages this header",
        ),
        (
            "auth",
            "extra_headers = { \"bad header\" = \"x\" }",
            "auth.extra_headers.bad header",
            "header name",
        ),
        (
            "auth",
            "extra_headers = { x-ok = \"bad\\nvalue\" }",
            "auth.extra_headers.x-ok",
            "header value",
        ),
        (
            "auth",
            "extra_headers = { x-ok = 5 }",
            "auth.extra_headers.x-ok",
            "expected a string",
        ),
        (
            "auth",
            "extra_headers = \"platform\"",
            "auth.extra_headers",
            "expected a table",
        ),
        ("log", "level = \"verbose\"", "log.level", "known level"),
        (
            "log",
            "level = \"hyper proto=info\"",
            "log.level",
            "valid target",
        ),
        ("log", "level = \"\"", "log.level", "must not be empty"),
        (
            "log",
            "format = \"yaml\"",
            "log.format",
            "\"json\" or \"text\"",
        ),
        (
            "limits",
            "max_concurrent_requests = 0",
            "limits.max_concurrent_requests",
            "at least 1",
        ),
        (
            "limits",
            "max_concurrent_requests = -1",
            "limits.max_concurrent_requests",
            "non-negative integer",
        ),
        (
            "retry",
            "max_attempts = 0",
            "retry.max_attempts",
            "between 1 and 10",
        ),
        (
            "retry",
            "max_attempts = 11",
            "retry.max_attempts",
            "between 1 and 10",
        ),
        (
            "retry",
            "backoff_base = \"0s\"",
            "retry.backoff_base",
            "greater than zero",
        ),
        (
            "retry",
            "backoff_cap = \"10ms\"",
            "retry.backoff_cap",
            "shorter than retry.backoff_base (50ms)",
        ),
        (
            "retry",
            "per_try_timeout = \"0s\"",
            "retry.per_try_timeout",
            "greater than zero",
        ),
        (
            "retry",
            "deadline = \"5s\"",
            "retry.per_try_timeout",
            "longer than retry.deadline (5s)",
        ),
        ("retry", "deadline = 30", "retry.deadline", "duration"),
        (
            "retry",
            "retry_after_cap = \"soon\"",
            "retry.retry_after_cap",
            "duration",
        ),
        (
            "retry",
            "budget_window = \"500ms\"",
            "retry.budget_window",
            "at least 1s",
        ),
        (
            "retry",
            "budget_window = \"5m\"",
            "retry.budget_window",
            "at most 1m",
        ),
        (
            "retry",
            "budget_ratio = 1.5",
            "retry.budget_ratio",
            "0.0 to 1.0",
        ),
        (
            "retry",
            "budget_ratio = 2",
            "retry.budget_ratio",
            "0.0 to 1.0",
        ),
        (
            "retry",
            "budget_min_per_second = -1",
            "retry.budget_min_per_second",
            "non-negative integer",
        ),
        (
            "retry",
            "max_replay_body = \"64KiB\"",
            "retry.max_replay_body",
            "non-negative integer",
        ),
        (
            "retry",
            "mint_idempotency_key = \"yes\"",
            "retry.mint_idempotency_key",
            "expected true or false",
        ),
        (
            "breaker",
            "enabled = 1",
            "breaker.enabled",
            "expected true or false",
        ),
        (
            "breaker",
            "consecutive_failures = 0",
            "breaker.consecutive_failures",
            "at least 1",
        ),
        (
            "breaker",
            "failure_ratio = 0.0",
            "breaker.failure_ratio",
            "greater than 0.0",
        ),
        (
            "breaker",
            "failure_ratio = 0",
            "breaker.failure_ratio",
            "greater than 0.0",
        ),
        (
            "breaker",
            "failure_ratio = 1.01",
            "breaker.failure_ratio",
            "0.0 to 1.0",
        ),
        (
            "breaker",
            "min_requests = 0",
            "breaker.min_requests",
            "at least 1",
        ),
        (
            "breaker",
            "window = \"999ms\"",
            "breaker.window",
            "at least 1s",
        ),
        (
            "breaker",
            "open_for = \"0s\"",
            "breaker.open_for",
            "greater than zero",
        ),
        (
            "breaker",
            "half_open_probes = 0",
            "breaker.half_open_probes",
            "at least 1",
        ),
        (
            "breaker",
            "half_open_probes = 4294967296",
            "breaker.half_open_probes",
            "at most 4294967295",
        ),
        (
            "rate_limit",
            "per_second = -5",
            "rate_limit.per_second",
            "non-negative integer",
        ),
        (
            "rate_limit",
            "per_second = 4294967296",
            "rate_limit.per_second",
            "at most 4294967295",
        ),
        ("rate_limit", "burst = 0", "rate_limit.burst", "at least 1"),
        (
            "rate_limit",
            "max_wait = \"soon\"",
            "rate_limit.max_wait",
            "duration",
        ),
        (
            "rate_limit",
            "upstream_backoff = \"0s\"",
            "rate_limit.upstream_backoff",
            "greater than zero",
        ),
        (
            "rate_limit",
            "routes = 5",
            "rate_limit.routes",
            "table of route templates",
        ),
        (
            "webhooks",
            "enabled = \"yes\"",
            "webhooks.enabled",
            "expected true or false",
        ),
        (
            "webhooks",
            "listen = \"localhost:8081\"",
            "webhooks.listen",
            "IP address and port",
        ),
        (
            "webhooks",
            "paths = \"/webhooks/fincode\"",
            "webhooks.paths",
            "expected a list, found a string",
        ),
        (
            "webhooks",
            "paths = []",
            "webhooks.paths",
            "at least one path",
        ),
        (
            "webhooks",
            "paths = [\"/a\", \"webhooks/fincode\"]",
            "webhooks.paths[1]",
            "absolute path",
        ),
        (
            "webhooks",
            "paths = [\"/a?x=1\"]",
            "webhooks.paths[0]",
            "absolute path",
        ),
        (
            "webhooks",
            "paths = [\"/a\", \"/b\", \"/a\"]",
            "webhooks.paths[2]",
            "repeats webhooks.paths[0]",
        ),
        (
            "webhooks",
            "max_body_bytes = 0",
            "webhooks.max_body_bytes",
            "between 1 and 67108864",
        ),
        (
            "webhooks",
            "max_body_bytes = 67108865",
            "webhooks.max_body_bytes",
            "between 1 and 67108864",
        ),
        (
            "webhooks",
            "max_body_bytes = -1",
            "webhooks.max_body_bytes",
            "non-negative integer",
        ),
        (
            "webhooks",
            "tls_cert_file = \"/nonexistent/tls.crt\"",
            "webhooks.tls_cert_file",
            "file not found",
        ),
        (
            "webhooks",
            "tls_key_file = \"/nonexistent/tls.key\"",
            "webhooks.tls_key_file",
            "file not found",
        ),
        (
            "webhooks",
            "allow_ips = [\"10.0.0.0/8\", \"192.168.1.0/24\", \"10.0.0.300\"]",
            "webhooks.allow_ips[2]",
            "IP address or CIDR range",
        ),
        (
            "webhooks",
            "allow_ips = [\"10.0.0.0/33\"]",
            "webhooks.allow_ips[0]",
            "IP address or CIDR range",
        ),
        (
            "webhooks",
            "allow_ips = [\"fincode.jp\"]",
            "webhooks.allow_ips[0]",
            "IP address or CIDR range",
        ),
        (
            "webhooks",
            "allow_ips = [10]",
            "webhooks.allow_ips[0]",
            "found an integer",
        ),
        (
            "webhooks",
            "trusted_proxies = [\"fe80::/129\"]",
            "webhooks.trusted_proxies[0]",
            "IP address or CIDR range",
        ),
        (
            "webhooks",
            "trusted_proxies = \"10.0.0.1\"",
            "webhooks.trusted_proxies",
            "expected a list",
        ),
        (
            "webhooks",
            "scheme = \"hmac-sha256\"",
            "webhooks.scheme",
            "\"hmac\", \"standard-webhooks\", \"stripe\", \"shared-secret\" or \"none\"",
        ),
        (
            "webhooks",
            "secret_envs = [\"FINCODE_WEBHOOK_SECRET\", \"not a name\"]",
            "webhooks.secret_envs[1]",
            "must name an environment variable",
        ),
        (
            "webhooks",
            "hmac_algorithm = \"sha1\"",
            "webhooks.hmac_algorithm",
            "\"sha256\" or \"sha512\"",
        ),
        (
            "webhooks",
            "hmac_encoding = \"base32\"",
            "webhooks.hmac_encoding",
            "\"hex\" or \"base64\"",
        ),
        (
            "webhooks",
            "signature_header = \"X Signature\"",
            "webhooks.signature_header",
            "not a valid HTTP header name",
        ),
        (
            "webhooks",
            "signature_prefix = \"v1,\\u00e9\"",
            "webhooks.signature_prefix",
            "printable ASCII",
        ),
        (
            "webhooks",
            "signature_prefix = \"sha256=\\t\"",
            "webhooks.signature_prefix",
            "printable ASCII",
        ),
        (
            "webhooks",
            "tolerance = \"500ms\"",
            "webhooks.tolerance",
            "at least 1s",
        ),
        (
            "webhooks",
            "dedupe_key = \"{eventType\"",
            "webhooks.dedupe_key",
            "the '{' at character 1 is never closed",
        ),
        (
            "webhooks",
            "dedupe_key = \"fincode\"",
            "webhooks.dedupe_key",
            "no placeholder",
        ),
        (
            "webhooks",
            "dedupe_key = \"{}\"",
            "webhooks.dedupe_key",
            "placeholder at character 1 is empty",
        ),
        (
            "webhooks",
            "dedupe_key = \"{data.id}\"",
            "webhooks.dedupe_key",
            "nested field",
        ),
        (
            "webhooks",
            "dedupe_key = \"{header:bad header}\"",
            "webhooks.dedupe_key",
            "valid header",
        ),
        (
            "webhooks",
            "dedupe_key = \"{/data/~2}\"",
            "webhooks.dedupe_key",
            "not a valid JSON pointer",
        ),
        (
            "webhooks",
            "dedupe_key = \"{event type}\"",
            "webhooks.dedupe_key",
            "not a field name",
        ),
        (
            "webhooks",
            "order_key = \"{Reference}}\"",
            "webhooks.order_key",
            "'}' at character 12 closes no placeholder",
        ),
        (
            "webhooks",
            "order_key = \"x\"",
            "webhooks.order_key",
            "no placeholder",
        ),
        (
            "webhooks",
            "deliver_to = \"ftp://127.0.0.1/hooks\"",
            "webhooks.deliver_to",
            "absolute http:// or https:// URL",
        ),
        (
            "webhooks",
            "deliver_to = \"/webhooks/fincode\"",
            "webhooks.deliver_to",
            "absolute http:// or https:// URL",
        ),
        (
            "webhooks",
            "deliver_to = 3000",
            "webhooks.deliver_to",
            "expected a string",
        ),
        (
            "webhooks",
            "signing_secret_env = \"whsec_abc def\"",
            "webhooks.signing_secret_env",
            "must name an environment variable",
        ),
        (
            "webhooks",
            "delivery_timeout = \"0s\"",
            "webhooks.delivery_timeout",
            "greater than zero",
        ),
        (
            "webhooks",
            "lease = \"0s\"",
            "webhooks.lease",
            "greater than zero",
        ),
        (
            "webhooks",
            "delivery_timeout = \"30s\"",
            "webhooks.delivery_timeout",
            "is not shorter than webhooks.lease (30s)",
        ),
        (
            "webhooks",
            "delivery_concurrency = 0",
            "webhooks.delivery_concurrency",
            "between 1 and 1024",
        ),
        (
            "webhooks",
            "delivery_concurrency = 1025",
            "webhooks.delivery_concurrency",
            "between 1 and 1024",
        ),
        (
            "webhooks",
            "max_attempts = 0",
            "webhooks.max_attempts",
            "between 1 and 1000",
        ),
        (
            "webhooks",
            "max_attempts = 1001",
            "webhooks.max_attempts",
            "between 1 and 1000",
        ),
        (
            "webhooks",
            "max_age = \"999ms\"",
            "webhooks.max_age",
            "at least 1s",
        ),
        (
            "webhooks",
            "retention = \"30m\"",
            "webhooks.retention",
            "at least 1h",
        ),
        (
            "webhooks",
            "dedupe_retention = \"59m\"",
            "webhooks.dedupe_retention",
            "at least 1h",
        ),
        (
            "webhooks",
            "dedupe_key = \"{Reference}\\\\{Status}\"",
            "webhooks.dedupe_key",
            "backslash outside its placeholders",
        ),
        (
            "webhooks",
            "backoff_base = \"0s\"",
            "webhooks.backoff_base",
            "greater than zero",
        ),
        (
            "webhooks",
            "backoff_cap = \"500ms\"",
            "webhooks.backoff_cap",
            "shorter than webhooks.backoff_base (1s)",
        ),
        (
            "webhooks",
            "confirm_by_query = 1",
            "webhooks.confirm_by_query",
            "expected true or false",
        ),
        (
            "webhooks",
            "confirm_path = \"transactions/{Reference}\"",
            "webhooks.confirm_path",
            "absolute path",
        ),
        (
            "webhooks",
            "confirm_path = \"/transactions/{Reference\"",
            "webhooks.confirm_path",
            "never closed",
        ),
        (
            "webhooks",
            "confirm_status_pointer = \"data/status\"",
            "webhooks.confirm_status_pointer",
            "not a JSON pointer",
        ),
        (
            "webhooks",
            "admin_token_env = \"Bearer abc\"",
            "webhooks.admin_token_env",
            "must name an environment variable",
        ),
        (
            "webhooks",
            "dedup_key = \"{Reference}\"",
            "webhooks.dedup_key",
            "did you mean `webhooks.dedupe_key`?",
        ),
        (
            "store",
            "sqlite_path = \"\"",
            "store.sqlite_path",
            "must not be empty",
        ),
        (
            "store",
            "sqlite_path = \" \"",
            "store.sqlite_path",
            "must not be empty",
        ),
        (
            "store",
            "sqlite_path = 5",
            "store.sqlite_path",
            "expected a string",
        ),
    ];
    for (section, line, key, expected) in cases {
        let text = if *section == "upstream" {
            format!("{}{line}\n", minimal())
        } else {
            format!("{}[{section}]\n{line}\n", minimal())
        };
        let problem = only_problem(&text, key, expected);
        assert!(!problem.fix.is_empty(), "{problem}");
        assert_eq!(problem.source, Source::File);
    }
}

#[test]
fn good_log_levels_are_accepted() {
    for level in [
        "info",
        "WARN",
        "info,fincode_proxy=debug",
        "hyper::proto = off, error",
    ] {
        let text = format!("{}[log]\nlevel = \"{level}\"\n", minimal());
        assert_eq!(load_ok(&text, &[]).0.log.level, level);
    }
}

#[test]
fn every_problem_is_reported_in_one_pass() {
    let text = "\
[listen]
egress = \"nowhere\"
[upstream]
connect_timeout = \"five\"
pool_max_idle_per_host = -1
http2 = \"yes\"
ca_fil = \"/etc/ca.pem\"
[auth]
mode = \"static\"
[log]
format = \"yaml\"
";
    let problems = errors(text, &[]);
    assert_eq!(
        keys(&problems),
        [
            "listen.egress",
            "upstream.base_url",
            "upstream.connect_timeout",
            "upstream.pool_max_idle_per_host",
            "upstream.http2",
            "upstream.ca_fil",
            "auth.token_env",
            "log.format",
        ],
        "{problems:#?}"
    );
    let err = load(text).unwrap_err();
    let shown = err.to_string();
    assert!(
        shown.starts_with("invalid configuration: 8 errors, 0 warnings\n"),
        "{shown}"
    );
    assert_eq!(shown.matches("\n  fix: ").count(), 8);
    assert!(
        shown.contains("error: upstream.base_url: missing required key\n  fix: add base_url = ")
    );
}

#[test]
fn warnings_ride_along_with_errors() {
    let text = format!(
        "[listen]\negress = \"0.0.0.0:8080\"\n{}http2 = 3\n",
        minimal()
    );
    let err = load(&text).unwrap_err();
    let problems = err.problems();
    assert_eq!(
        keys(problems),
        ["upstream.http2", "listen.egress", "auth.mode"]
    );
    assert_eq!(problems[1].severity, Severity::Warning);
    assert!(problems[1].message.contains("reachable from the network"));
}

// --- unknown keys ---

#[test]
fn unknown_keys_get_a_did_you_mean() {
    let text = minimal_and(
        "ca_fil = \"/x.pem\"\n[listen]\nbase_url = \"x\"\n[upstrem]\nhttp2 = true\n[zzz]\n",
    );
    let problems = errors(&text, &[]);
    let find = |key: &str| problems.iter().find(|p| p.key == key).unwrap();
    assert!(
        find("upstream.ca_fil")
            .message
            .contains("did you mean `upstream.ca_file`?")
    );
    assert_eq!(
        find("upstream.ca_fil").fix,
        "rename it to `upstream.ca_file`"
    );
    assert!(
        find("listen.base_url")
            .message
            .contains("did you mean `upstream.base_url`?")
    );
    assert!(
        find("upstrem")
            .message
            .contains("unknown section; did you mean `upstream`?")
    );
    assert_eq!(find("zzz").message, "unknown section");
    assert!(problems.iter().all(|p| p.value.is_none()));
    assert_eq!(problems.len(), 4);
}

// --- secrets ---

#[test]
fn literal_secrets_are_refused_and_never_echoed() {
    let cases: &[(&str, &str)] = &[
        ("password = \"{c}\"\n{m}", "password"),
        ("{m}api_key = \"{c}\"\n", "upstream.api_key"),
        ("{m}[auth]\ntoken = \"{c}\"\n", "auth.token"),
        ("{m}[auth]\nclient_secret = \"{c}\"\n", "auth.client_secret"),
        (
            "{m}[vault]\nlogin = {{ passwd = \"{c}\" }}\n",
            "vault.login.passwd",
        ),
        ("{m}[log]\ncard_pin = \"{c}\"\n", "log.card_pin"),
        (
            "{m}[auth]\nextra_headers = {{ Authorization = \"Bearer {c}\" }}\n",
            "auth.extra_headers.Authorization",
        ),
        (
            "{m}[auth]\nextra_headers = {{ x-session-token = \"{c}\" }}\n",
            "auth.extra_headers.x-session-token",
        ),
        (
            "{m}[auth]\nheader = \"X-Key\"\nextra_headers = {{ x-key = \"{c}\" }}\n",
            "auth.extra_headers.x-key",
        ),
    ];
    for (template, key) in cases {
        let text = template
            .replace("{m}", &minimal())
            .replace("{c}", CANARY)
            .replace("{{", "{")
            .replace("}}", "}");
        let err = assert_no_canary(&text, &[]);
        let problem = err.problems().iter().find(|p| p.key == *key);
        let problem = problem.unwrap_or_else(|| panic!("no problem for {key}: {err}"));
        assert!(
            problem
                .message
                .contains("secrets are never written in the config file"),
            "{problem}"
        );
        assert_eq!(problem.value, None);
    }
}

#[test]
fn secret_fix_names_the_env_key_to_use() {
    let text = format!("{}[auth]\ntoken = \"{CANARY}\"\n", minimal());
    let problems = errors(&text, &[]);
    assert_eq!(
        problems[0].fix,
        "put the value in an environment variable and name it: set auth.token_env = \"FINCODE_API_TOKEN\""
    );
}

#[test]
fn secrets_from_the_env_overlay_are_refused_too() {
    let var = "FINCODE_SIDECAR__AUTH__TOKEN";
    let err = assert_no_canary(&minimal(), &[(var, CANARY)]);
    let problems = err.problems();
    assert_eq!(keys(problems)[0], "auth.token");
    assert_eq!(problems[0].source, Source::Env(var.to_owned()));
    assert!(
        problems[0]
            .to_string()
            .contains("(from FINCODE_SIDECAR__AUTH__TOKEN)")
    );
}

#[test]
fn env_keys_must_hold_a_name_not_the_secret() {
    for bad in [
        format!("sk live {CANARY}"),
        format!("9{CANARY}"),
        "x".repeat(129),
    ] {
        let text = format!(
            "{}[auth]\nmode = \"static\"\ntoken_env = \"{bad}\"\n",
            minimal()
        );
        let err = assert_no_canary(&text, &[]);
        let problems = err.problems();
        assert_eq!(
            keys(problems),
            ["auth.token_env", "auth.token_env"],
            "{err}"
        );
        assert!(
            problems[0]
                .message
                .contains("must name an environment variable")
        );
        assert!(!err.to_string().contains(&bad));
        // The second is the consequence: static mode without a usable token_env.
        assert!(
            problems[1]
                .message
                .contains("required when auth.mode = \"static\"")
        );
    }
    // Also through the overlay.
    assert_no_canary(
        &minimal(),
        &[(
            "FINCODE_SIDECAR__AUTH__TOKEN_ENV",
            &format!("Bearer {CANARY}"),
        )],
    );
}

#[test]
fn syntax_errors_give_line_and_column_without_the_line() {
    let text = format!("[auth]\n\npassword = \"{CANARY}\n");
    let err = assert_no_canary(&text, &[]);
    let ConfigError::Syntax { line, column, .. } = err else {
        panic!("expected a syntax error, got {err:?}");
    };
    assert_eq!(line, 3);
    assert!(column > 1);
    assert!(
        err.to_string().ends_with("\n  fix: fix the TOML syntax"),
        "{err}"
    );
}

#[test]
fn env_that_creates_a_table_where_a_value_belongs_is_blamed() {
    let var = "FINCODE_SIDECAR__UPSTREAM__HTTP2__X";
    env_problem(&minimal(), var, "1", "upstream.http2");
}

#[test]
fn env_debug_shows_names_only() {
    let shown = format!("{:?}", env(&[("FINCODE_API_TOKEN", CANARY)]));
    assert!(
        shown.contains("FINCODE_API_TOKEN") && !shown.contains(CANARY),
        "{shown}"
    );
}

// --- upstream.base_url ---

#[test]
fn plain_http_is_refused_unless_allow_insecure_then_warned() {
    let text = "[upstream]\nbase_url = \"http://acme.fincode.tech\"\n";
    let problems = errors(text, &[]);
    assert_eq!(keys(&problems), ["upstream.base_url"]);
    assert_eq!(
        problems[0].to_string(),
        "error: upstream.base_url = \"http://acme.fincode.tech\": plain HTTP is refused; FinCode \
         must be reached over HTTPS\n  fix: use an https:// URL (or set \
         upstream.allow_insecure = true, for tests only)"
    );

    let (config, warnings) = load_ok(&format!("{text}allow_insecure = true\n"), &[]);
    assert_eq!(config.upstream.base_url, "http://acme.fincode.tech/");
    let warning = warnings
        .iter()
        .find(|p| p.key == "upstream.base_url")
        .unwrap();
    assert!(warning.message.contains("tests only"));
}

#[test]
fn base_url_is_normalised() {
    let text = "[upstream]\nbase_url = \"HTTPS://Acme.FinCode.tech:443/api/v6/services//\"\n";
    let (config, _) = load_ok(text, &[]);
    assert_eq!(
        config.upstream.base_url,
        "https://acme.fincode.tech:443/api/v6/services"
    );
    assert_eq!(config.upstream.base_path(), "/api/v6/services");
}

#[test]
fn bad_base_urls_are_refused() {
    for (url, expected) in [
        ("acme.fincode.tech", "absolute URL"),
        ("/api/v6", "absolute URL"),
        ("ftp://acme.fincode.tech", "scheme must be https"),
        ("https://acme.fincode.tech/api?x=1", "query string"),
        ("https://acme.fincode.tech/api#top", "fragment"),
        ("https://acme fincode", "not a valid URL"),
    ] {
        let problems = errors(&format!("[upstream]\nbase_url = \"{url}\"\n"), &[]);
        assert_eq!(keys(&problems), ["upstream.base_url"], "{url}");
        assert!(
            problems[0].message.contains(expected),
            "{url}: {}",
            problems[0]
        );
    }
}

#[test]
fn userinfo_in_base_url_is_refused_without_echo() {
    let text =
        format!("[upstream]\nbase_url = \"https://merchant:{CANARY}@acme.fincode.tech/api\"\n");
    let err = assert_no_canary(&text, &[]);
    assert_eq!(keys(err.problems()), ["upstream.base_url", "auth.mode"]);
    assert_eq!(err.problems()[0].value, None);
    assert!(err.problems()[0].message.contains("user name or password"));
}

// --- upstream.ca_file ---

#[test]
fn ca_file_must_exist_and_hold_a_pem_certificate() {
    let missing = minimal_and("ca_file = \"/nonexistent/ca.pem\"\n");
    let problem = only_problem(&missing, "upstream.ca_file", "file not found");
    assert_eq!(problem.value.as_deref(), Some("\"/nonexistent/ca.pem\""));

    let not_pem = pem_file("this is not a certificate");
    let text = format!("{}ca_file = {:?}\n", minimal(), not_pem.path());
    let problems = errors(&text, &[]);
    assert!(
        problems[0].message.contains("no PEM certificate"),
        "{}",
        problems[0]
    );

    let good = pem_file(PEM);
    let text = format!("{}ca_file = {:?}\n", minimal(), good.path());
    assert_eq!(
        load_ok(&text, &[]).0.upstream.ca_file.as_deref(),
        Some(good.path())
    );
}

// --- cross-field rules ---

#[test]
fn static_mode_needs_token_env() {
    let text = minimal_and("[auth]\nmode = \"static\"\n");
    let problems = errors(&text, &[]);
    assert_eq!(keys(&problems), ["auth.token_env"]);
    assert!(
        problems[0]
            .fix
            .contains("auth.token_env = \"FINCODE_API_TOKEN\"")
    );

    let text = format!("{text}token_env = \"FINCODE_API_TOKEN\"\n");
    let (config, warnings) = load_ok(&text, &[]);
    assert_eq!(config.auth.mode, AuthMode::Static);
    assert!(warnings.is_empty(), "{warnings:?}");
}

#[test]
fn listeners_cannot_share_a_port() {
    let text = format!("[listen]\negress = \"127.0.0.1:9090\"\n{}", minimal());
    assert_eq!(keys(&errors(&text, &[])), ["listen.admin"]);
}

// --- reading files ---

#[test]
fn load_reads_a_file_and_names_it_in_errors() {
    let file = pem_file(&minimal());
    assert!(Config::load(file.path(), &Env::default()).is_ok());

    let err = Config::load(
        std::path::Path::new("/nonexistent/fincode.toml"),
        &Env::default(),
    )
    .unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }));
    assert!(
        err.to_string().contains("/nonexistent/fincode.toml"),
        "{err}"
    );

    let broken = pem_file("[upstream\n");
    let err = Config::load(broken.path(), &Env::default()).unwrap_err();
    assert!(
        err.to_string()
            .contains(&broken.path().display().to_string()),
        "{err}"
    );
    assert!(err.to_string().contains("line 1"), "{err}");
}

// --- serialisation ---

#[test]
fn to_toml_string_round_trips() {
    let ca = pem_file(PEM);
    let mut config = Config::with_base_url(Uri::from_static("http://127.0.0.1:18443/api"));
    config.listen.egress = "[::1]:18080".parse().unwrap();
    config.listen.admin = "127.0.0.1:19090".parse().unwrap();
    config.upstream.ca_file = Some(ca.path().to_owned());
    config.upstream.allow_insecure = true;
    config.upstream.connect_timeout = Duration::from_millis(250);
    config.upstream.request_timeout = Duration::from_secs(90);
    config.upstream.pool_idle_timeout = Duration::from_secs(1);
    config.upstream.pool_max_idle_per_host = 0;
    config.upstream.http2 = false;
    config.limits.max_request_body_bytes = 1;
    config.limits.max_request_header_bytes = 1024;
    config.auth.mode = AuthMode::Static;
    config.auth.header = http::HeaderName::from_static("x-fincode-key");
    config.auth.token_env = Some("FINCODE_API_TOKEN".to_owned());
    config
        .auth
        .extra_headers
        .insert("x-merchant".to_owned(), "m 42".to_owned());
    config.log.level = "debug,hyper=info".to_owned();
    config.log.format = LogFormat::Text;
    config.limits.max_concurrent_requests = 7;
    config.retry = RetryConfig {
        max_attempts: 10,
        backoff_base: Duration::from_millis(5),
        backoff_cap: Duration::from_millis(1500),
        per_try_timeout: Duration::from_secs(3),
        deadline: Duration::from_secs(3),
        retry_after_cap: Duration::from_mins(2),
        budget_ratio: 0.05,
        budget_min_per_second: 0,
        budget_window: Duration::from_secs(1),
        max_replay_body: 0,
        mint_idempotency_key: true,
    };
    config.breaker = BreakerConfig {
        enabled: false,
        consecutive_failures: 1,
        failure_ratio: 1.0,
        min_requests: u32::MAX,
        window: Duration::from_mins(1),
        open_for: Duration::from_millis(1),
        half_open_probes: 9,
    };
    config.rate_limit.per_second = 0;
    config.rate_limit.burst = 1;
    config.rate_limit.max_wait = Duration::ZERO;
    config.rate_limit.upstream_backoff = Duration::from_millis(750);
    config.rate_limit.routes.insert(
        "/transactionmanagement/transactions/{id}".to_owned(),
        RouteLimit {
            per_second: 1,
            burst: 3,
        },
    );

    let tls_cert = pem_file(PEM);
    let tls_key = pem_file(PEM_KEY);
    config.webhooks = WebhooksConfig {
        enabled: true,
        listen: "[::1]:18081".parse().unwrap(),
        paths: vec!["/webhooks/fincode".to_owned(), "/hooks/v2".to_owned()],
        max_body_bytes: 1,
        max_unverified_bytes: 2,
        body_read_timeout: Duration::from_secs(3),
        tls_cert_file: Some(tls_cert.path().to_owned()),
        tls_key_file: Some(tls_key.path().to_owned()),
        allow_ips: vec![
            "203.0.113.0/24".parse().unwrap(),
            ipnet::IpNet::from("2001:db8::7".parse::<std::net::IpAddr>().unwrap()),
        ],
        trusted_proxies: vec!["10.0.0.0/8".parse().unwrap()],
        scheme: WebhookScheme::StandardWebhooks,
        secret_envs: vec!["WEBHOOK_SECRET_OLD".to_owned(), "WEBHOOK_SECRET".to_owned()],
        hmac_algorithm: HmacAlgorithm::Sha512,
        hmac_encoding: HmacEncoding::Base64,
        signature_header: Some("x-signature".to_owned()),
        signature_prefix: "v1=".to_owned(),
        tolerance: Duration::from_secs(1),
        dedupe_key: tpl("{header:webhook-id}"),
        order_key: Some(tpl("{/data/customer_id}")),
        deliver_to: Some(Uri::from_static("https://app.internal:8443/hooks/fincode")),
        signing_secret_env: Some("FINCODE_SIDECAR_WEBHOOK_SIGNING_SECRET".to_owned()),
        delivery_timeout: Duration::from_millis(250),
        lease: Duration::from_secs(1),
        delivery_concurrency: 1024,
        max_attempts: 1000,
        max_age: Duration::from_mins(90),
        retention: Duration::from_hours(48),
        dedupe_retention: Duration::from_hours(96),
        backoff_base: Duration::from_secs(2),
        backoff_cap: Duration::from_secs(2),
        confirm_by_query: true,
        confirm_path: tpl("/payments/{Reference}/status"),
        confirm_status_pointer: String::new(),
        admin_token_env: Some("FINCODE_SIDECAR_ADMIN_TOKEN".to_owned()),
    };
    config.store = StoreBackend::Sqlite {
        path: "/var/lib/fincode-sidecar/events.db".into(),
    };

    let text = config.to_toml_string();
    let (reloaded, _) = load_ok(&text, &[]);
    assert_eq!(reloaded, config, "{text}");
    // Lists of ranges are written as strings, and a plain address as its one-address range.
    assert!(
        text.contains("allow_ips = [\"203.0.113.0/24\", \"2001:db8::7/128\"]"),
        "{text}"
    );

    // Every spelling of the enums reads back.
    for (scheme, algorithm, encoding) in [
        (
            WebhookScheme::Hmac,
            HmacAlgorithm::Sha256,
            HmacEncoding::Hex,
        ),
        (
            WebhookScheme::Stripe,
            HmacAlgorithm::Sha512,
            HmacEncoding::Base64,
        ),
        (
            WebhookScheme::SharedSecret,
            HmacAlgorithm::Sha256,
            HmacEncoding::Base64,
        ),
        (
            WebhookScheme::None,
            HmacAlgorithm::Sha512,
            HmacEncoding::Hex,
        ),
    ] {
        config.webhooks.scheme = scheme;
        config.webhooks.hmac_algorithm = algorithm;
        config.webhooks.hmac_encoding = encoding;
        let text = config.to_toml_string();
        assert_eq!(load_ok(&text, &[]).0, config, "{text}");
    }

    let defaults = Config::with_base_url(Uri::from_static(BASE_URL));
    assert_eq!(load_ok(&defaults.to_toml_string(), &[]).0, defaults);

    // No per-route limits at all survives the trip too (an empty table, not "absent").
    let mut no_routes = defaults;
    no_routes.rate_limit.routes.clear();
    assert_eq!(load_ok(&no_routes.to_toml_string(), &[]).0, no_routes);
}

// --- check_environment ---

#[test]
fn check_environment_reports_unset_token_variable_without_value() {
    let text = minimal_and("[auth]\nmode = \"static\"\ntoken_env = \"FINCODE_API_TOKEN\"\n");
    let (config, _) = load_ok(&text, &[]);

    let problems = config.check_environment(&Env::default());
    assert_eq!(keys(&problems), ["auth.token_env"]);
    assert_eq!(
        problems[0].message,
        "environment variable FINCODE_API_TOKEN (named by auth.token_env) is not set"
    );
    assert_eq!(
        config
            .check_environment(&env(&[("FINCODE_API_TOKEN", " ")]))
            .len(),
        1
    );
    assert!(
        config
            .check_environment(&env(&[("FINCODE_API_TOKEN", CANARY)]))
            .is_empty()
    );

    // Mode "none" reads no variable.
    let (config, _) = load_ok(&minimal(), &[]);
    assert!(config.check_environment(&Env::default()).is_empty());
}

#[test]
fn check_environment_reports_unset_webhook_secrets_by_name_only() {
    let text = format!(
        "{}[webhooks]\nenabled = true\nsecret_envs = [\"WEBHOOK_SECRET_OLD\", \"WEBHOOK_SECRET\"]\n\
         deliver_to = \"http://127.0.0.1:3000/webhooks/fincode\"\n\
         signing_secret_env = \"SIGNING_SECRET\"\nadmin_token_env = \"ADMIN_TOKEN\"\n",
        minimal()
    );
    let (config, _) = load_ok(&text, &[]);

    let problems = config.check_environment(&Env::default());
    assert_eq!(
        keys(&problems),
        [
            "webhooks.secret_envs[0]",
            "webhooks.secret_envs[1]",
            "webhooks.signing_secret_env",
            "webhooks.admin_token_env",
        ]
    );
    assert_eq!(
        problems[0].message,
        "environment variable WEBHOOK_SECRET_OLD (named by webhooks.secret_envs[0]) is not set"
    );
    assert_eq!(problems[0].value.as_deref(), Some("\"WEBHOOK_SECRET_OLD\""));
    assert!(problems.iter().all(|p| p.severity == Severity::Error));

    // Set ones are not reported, and their values never appear; blank counts as unset.
    let problems = config.check_environment(&env(&[
        ("WEBHOOK_SECRET_OLD", CANARY),
        ("WEBHOOK_SECRET", CANARY),
        ("SIGNING_SECRET", " "),
        ("ADMIN_TOKEN", CANARY),
    ]));
    assert_eq!(keys(&problems), ["webhooks.signing_secret_env"]);
    for problem in &problems {
        assert!(!problem.to_string().contains(CANARY));
        assert!(!format!("{problem:?}").contains(CANARY));
    }

    // Webhooks off: their variables are not needed.
    let mut off = config.clone();
    off.webhooks.enabled = false;
    assert!(off.check_environment(&Env::default()).is_empty());

    // Alongside the auth variables, auth first.
    let text = format!("{text}[auth]\nmode = \"static\"\ntoken_env = \"FINCODE_API_TOKEN\"\n");
    let (config, _) = load_ok(&text, &[]);
    let problems = config.check_environment(&env(&[
        ("WEBHOOK_SECRET_OLD", "a"),
        ("WEBHOOK_SECRET", "b"),
        ("SIGNING_SECRET", "c"),
    ]));
    assert_eq!(
        keys(&problems),
        ["auth.token_env", "webhooks.admin_token_env"]
    );
}

// --- logging bodies, redaction and traces ---

#[test]
fn redact_and_traces_keys_load() {
    let text = format!(
        "{}[log]\nbodies = true\nbody_level = \"trace\"\n\
         [redact]\nheaders = [\"X-Customer-Pin\"]\nquery_params = [\"ref\"]\n\
         fields = {{ secretAnswer = \"drop\", customerRef = \"hash\", card = \"mask\" }}\n\
         hash_key_env = \"HASH_KEY\"\n\
         [traces]\notlp_endpoint = \"http://127.0.0.1:4318/v1/traces\"\nsample_ratio = 0.25\n",
        minimal()
    );
    let (config, _) = load_ok(&text, &[]);
    assert!(config.log.bodies);
    assert_eq!(config.log.body_level, BodyLevel::Trace);
    assert_eq!(config.redact.headers, ["x-customer-pin"]);
    assert_eq!(config.redact.fields["customerRef"], FieldAction::Hash);
    assert_eq!(config.redact.fields["card"], FieldAction::Mask);
    assert_eq!(config.redact.hash_key_env.as_deref(), Some("HASH_KEY"));
    assert_eq!(
        config.traces.otlp_endpoint.unwrap().to_string(),
        "http://127.0.0.1:4318/v1/traces"
    );
    assert!((config.traces.sample_ratio - 0.25).abs() < f64::EPSILON);
}

#[test]
fn bad_redact_and_traces_values_name_their_keys() {
    let text = format!(
        "{}[log]\nbody_level = \"loud\"\n\
         [redact]\nheaders = \"x\"\nfields = {{ a = \"shred\" }}\nhash_key_env = \"{CANARY}\"\n\
         [traces]\notlp_endpoint = \"ftp://collector\"\nsample_ratio = 1.5\n",
        minimal()
    );
    let problems = errors(&text, &[]);
    let mut got = keys(&problems);
    got.sort_unstable();
    assert_eq!(
        got,
        [
            "log.body_level",
            "redact.fields",
            "redact.hash_key_env",
            "redact.headers",
            "traces.otlp_endpoint",
            "traces.sample_ratio"
        ]
    );
    let err = assert_no_canary(&text, &[]);
    assert!(err.to_string().contains("drop"), "{err}");
}

#[test]
fn otlp_endpoint_with_credentials_is_refused_without_echo() {
    let text = format!(
        "{}[traces]\notlp_endpoint = \"https://user:{CANARY}@collector:4318\"\n",
        minimal()
    );
    let err = assert_no_canary(&text, &[]);
    assert!(
        err.to_string().contains("OTEL_EXPORTER_OTLP_HEADERS"),
        "{err}"
    );
}

// --- retry, breaker and rate limits ---

#[test]
fn retry_breaker_and_rate_limit_default_when_absent() {
    let (config, _) = load_ok(&minimal(), &[]);
    assert_eq!(config.limits.max_concurrent_requests, 1024);
    assert_eq!(config.retry, RetryConfig::default());
    assert_eq!(config.retry.max_attempts, 3);
    assert_eq!(config.retry.backoff_base, Duration::from_millis(50));
    assert_eq!(config.retry.deadline, Duration::from_secs(30));
    assert!(!config.retry.mint_idempotency_key);
    assert_eq!(config.breaker, BreakerConfig::default());
    assert!(config.breaker.enabled);
    assert_eq!(config.breaker.consecutive_failures, 5);
    assert_eq!(config.rate_limit, RateLimitConfig::default());
    assert_eq!(config.rate_limit.per_second, 100);
    assert_eq!(
        config.rate_limit.routes[CREATE_TRANSACTION_ROUTE],
        RouteLimit {
            per_second: 20,
            burst: 40,
        }
    );
    // Empty sections are the same as absent ones.
    let text = minimal_and("[retry]\n[breaker]\n[rate_limit]\n");
    assert_eq!(load_ok(&text, &[]).0, config);
}

#[test]
fn retry_breaker_and_rate_limit_sections_load() {
    let text = format!(
        "{}[limits]\nmax_concurrent_requests = 32\n\
         [retry]\nmax_attempts = 5\nbackoff_base = \"20ms\"\nbackoff_cap = \"1s\"\n\
         per_try_timeout = \"2s\"\ndeadline = \"8s\"\nretry_after_cap = \"3s\"\n\
         budget_ratio = 0.5\nbudget_min_per_second = 0\nbudget_window = \"30s\"\n\
         max_replay_body = 1048576\nmint_idempotency_key = true\n\
         [breaker]\nenabled = false\nconsecutive_failures = 2\nfailure_ratio = 1\n\
         min_requests = 4\nwindow = \"1m\"\nopen_for = \"500ms\"\nhalf_open_probes = 1\n\
         [rate_limit]\nper_second = 0\nburst = 4294967295\nmax_wait = \"0s\"\n\
         upstream_backoff = \"250ms\"\n",
        minimal()
    );
    let (config, _) = load_ok(&text, &[]);
    assert_eq!(config.limits.max_concurrent_requests, 32);
    assert_eq!(
        config.retry,
        RetryConfig {
            max_attempts: 5,
            backoff_base: Duration::from_millis(20),
            backoff_cap: Duration::from_secs(1),
            per_try_timeout: Duration::from_secs(2),
            deadline: Duration::from_secs(8),
            retry_after_cap: Duration::from_secs(3),
            budget_ratio: 0.5,
            budget_min_per_second: 0,
            budget_window: Duration::from_secs(30),
            max_replay_body: 1_048_576,
            mint_idempotency_key: true,
        }
    );
    assert_eq!(
        config.breaker,
        BreakerConfig {
            enabled: false,
            consecutive_failures: 2,
            failure_ratio: 1.0,
            min_requests: 4,
            window: Duration::from_mins(1),
            open_for: Duration::from_millis(500),
            half_open_probes: 1,
        }
    );
    assert_eq!(config.rate_limit.per_second, 0);
    assert_eq!(config.rate_limit.burst, u32::MAX);
    assert_eq!(config.rate_limit.max_wait, Duration::ZERO);
    assert_eq!(
        config.rate_limit.upstream_backoff,
        Duration::from_millis(250)
    );
    // Not mentioned, so the default route stays.
    assert_eq!(config.rate_limit.routes, RateLimitConfig::default().routes);
}

#[test]
fn the_edges_of_each_range_are_accepted() {
    for (section, line) in [
        ("retry", "max_attempts = 1"),
        ("retry", "max_attempts = 10"),
        ("retry", "budget_ratio = 0"),
        ("retry", "budget_ratio = 1"),
        ("retry", "budget_window = \"1s\""),
        ("retry", "backoff_cap = \"50ms\""),
        ("retry", "per_try_timeout = \"30s\""),
        ("breaker", "failure_ratio = 1.0"),
        ("breaker", "window = \"1s\""),
        ("rate_limit", "per_second = 4294967295"),
        ("limits", "max_concurrent_requests = 1"),
    ] {
        let text = format!("{}[{section}]\n{line}\n", minimal());
        load_ok(&text, &[]);
    }
}

#[test]
fn routes_replace_the_default_map() {
    let text = format!(
        "{}[rate_limit.routes]\n\
         \"/sandbox/echo\" = {{ per_second = 5 }}\n\
         \"/transactionmanagement/transactions\" = {{ per_second = 1, burst = 10 }}\n",
        minimal()
    );
    let (config, _) = load_ok(&text, &[]);
    assert_eq!(
        config.rate_limit.routes,
        BTreeMap::from([
            (
                "/sandbox/echo".to_owned(),
                // burst defaults to per_second.
                RouteLimit {
                    per_second: 5,
                    burst: 5,
                },
            ),
            (
                "/transactionmanagement/transactions".to_owned(),
                RouteLimit {
                    per_second: 1,
                    burst: 10,
                },
            ),
        ])
    );
    // The rest of the section keeps its defaults.
    assert_eq!(config.rate_limit.per_second, 100);

    // An empty table lifts every per-route limit.
    let text = minimal_and("[rate_limit.routes]\n");
    assert!(load_ok(&text, &[]).0.rate_limit.routes.is_empty());
}

#[test]
fn bad_routes_are_refused_under_their_own_key() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "\"transactionmanagement/x\" = { per_second = 5 }",
            "rate_limit.routes.\"transactionmanagement/x\"",
            "must start with '/'",
        ),
        (
            "\"/transactionmanagement/create-transactoin\" = { per_second = 5 }",
            "rate_limit.routes.\"/transactionmanagement/create-transactoin\"",
            "not a route the sidecar knows",
        ),
        (
            "\"/sandbox/ping\" = { per_second = 0 }",
            "rate_limit.routes.\"/sandbox/ping\".per_second",
            "at least 1",
        ),
        (
            "\"/sandbox/ping\" = { per_second = 4294967296 }",
            "rate_limit.routes.\"/sandbox/ping\".per_second",
            "at most 4294967295",
        ),
        (
            "\"/sandbox/ping\" = { per_second = 2, burst = 0 }",
            "rate_limit.routes.\"/sandbox/ping\".burst",
            "at least 1",
        ),
        (
            "\"/sandbox/ping\" = { burst = 5 }",
            "rate_limit.routes.\"/sandbox/ping\".per_second",
            "missing required key",
        ),
        (
            "\"/sandbox/ping\" = 5",
            "rate_limit.routes.\"/sandbox/ping\"",
            "expected a table with per_second",
        ),
        (
            "\"/transactionmanagement/create-transaction\" = { per_second = 2, burts = 4 }",
            "rate_limit.routes.\"/transactionmanagement/create-transaction\".burts",
            "did you mean `rate_limit.routes.\"/transactionmanagement/create-transaction\".burst`?",
        ),
        (
            "\"/sandbox/ping\" = { per_second = 2, rate = 4 }",
            "rate_limit.routes.\"/sandbox/ping\".rate",
            "unknown key",
        ),
    ];
    for (line, key, expected) in cases {
        let text = format!("{}[rate_limit.routes]\n{line}\n", minimal());
        let problem = only_problem(&text, key, expected);
        assert!(!problem.fix.is_empty(), "{problem}");
    }

    // A secret pasted into a route is refused as one, and not echoed.
    let text = format!(
        "{}[rate_limit.routes]\n\"/sandbox/ping\" = {{ per_second = 1, token = \"{CANARY}\" }}\n",
        minimal()
    );
    assert_no_canary(&text, &[]);
    let problems = errors(&text, &[]);
    assert_eq!(
        keys(&problems),
        ["rate_limit.routes.\"/sandbox/ping\".token"]
    );
    assert!(problems[0].message.contains("secrets are never written"));
}

#[test]
fn env_overlay_reaches_the_new_sections() {
    let (config, _) = load_ok(
        &minimal(),
        &[
            ("FINCODE_SIDECAR__RETRY__MAX_ATTEMPTS", "5"),
            ("FINCODE_SIDECAR__RETRY__DEADLINE", "45s"),
            ("FINCODE_SIDECAR__BREAKER__ENABLED", "false"),
            ("FINCODE_SIDECAR__BREAKER__FAILURE_RATIO", "0.25"),
            ("FINCODE_SIDECAR__RATE_LIMIT__MAX_WAIT", "0s"),
            ("FINCODE_SIDECAR__LIMITS__MAX_CONCURRENT_REQUESTS", "64"),
        ],
    );
    assert_eq!(config.retry.max_attempts, 5);
    assert_eq!(config.retry.deadline, Duration::from_secs(45));
    assert!(!config.breaker.enabled);
    assert!((config.breaker.failure_ratio - 0.25).abs() < f64::EPSILON);
    assert_eq!(config.rate_limit.max_wait, Duration::ZERO);
    assert_eq!(config.limits.max_concurrent_requests, 64);
    // Routes were not touched, so the default stays.
    assert_eq!(config.rate_limit.routes, RateLimitConfig::default().routes);

    let var = "FINCODE_SIDECAR__RETRY__MAX_ATTEMPTS";
    let problem = env_problem(&minimal(), var, "50", "retry.max_attempts");
    assert_eq!(problem.value.as_deref(), Some("50"));
}

#[test]
fn a_transposed_key_gets_a_did_you_mean() {
    let text = minimal_and("[retry]\nmax_attemtps = 5\n");
    only_problem(
        &text,
        "retry.max_attemtps",
        "did you mean `retry.max_attempts`?",
    );
}

// --- webhooks and store ---

/// `[webhooks]` enabled with everything the enabled-only rules require.
fn webhooks_on(extra: &str) -> String {
    format!(
        "{}[webhooks]\nenabled = true\nsecret_envs = [\"FINCODE_WEBHOOK_SECRET\"]\n\
         deliver_to = \"http://127.0.0.1:3000/webhooks/fincode\"\n\
         signing_secret_env = \"FINCODE_SIDECAR_WEBHOOK_SIGNING_SECRET\"\n{extra}",
        minimal()
    )
}

#[test]
fn webhooks_and_store_default_when_absent() {
    let (config, warnings) = load_ok(&minimal(), &[]);
    assert_eq!(config.webhooks, WebhooksConfig::default());
    assert!(!config.webhooks.enabled);
    assert_eq!(config.webhooks.listen, "0.0.0.0:8081".parse().unwrap());
    assert_eq!(config.webhooks.paths, ["/webhooks/fincode"]);
    assert_eq!(config.webhooks.max_body_bytes, 65_536);
    assert_eq!(config.webhooks.max_unverified_bytes, 8_388_608);
    assert_eq!(config.webhooks.scheme, WebhookScheme::Hmac);
    assert_eq!(config.webhooks.hmac_algorithm, HmacAlgorithm::Sha256);
    assert_eq!(config.webhooks.hmac_encoding, HmacEncoding::Hex);
    assert!(config.webhooks.allow_ips.is_empty() && config.webhooks.secret_envs.is_empty());
    assert_eq!(
        config.webhooks.dedupe_key.to_string(),
        "{eventType}:{Reference}:{Status}"
    );
    assert_eq!(config.webhooks.deliver_to, None);
    assert_eq!(config.webhooks.max_age, Duration::from_hours(24));
    assert_eq!(config.store, StoreBackend::default());
    assert_eq!(
        config.store,
        StoreBackend::Sqlite {
            path: "fincode-sidecar.db".into()
        }
    );
    // Nothing about webhooks to warn of while they are off.
    assert_eq!(keys(&warnings), ["auth.mode"]);
    // Empty sections are the same as absent ones.
    let text = minimal_and("[webhooks]\n[store]\n");
    assert_eq!(load_ok(&text, &[]).0, config);
}

#[test]
fn every_webhooks_and_store_key_is_read() {
    let cert = pem_file(PEM);
    let key = pem_file(PEM_KEY);
    let text = format!(
        "{}[webhooks]\n\
         enabled = true\n\
         listen = \"127.0.0.1:18081\"\n\
         paths = [\"/webhooks/fincode\", \"/webhooks/fincode-v2\"]\n\
         max_body_bytes = 67108864\n\
         max_unverified_bytes = 134217728\n\
         body_read_timeout = \"7s\"\n\
         tls_cert_file = {:?}\n\
         tls_key_file = {:?}\n\
         allow_ips = [\"203.0.113.0/24\", \"198.51.100.7\", \"2001:db8::/32\", \"2001:db8::7\"]\n\
         trusted_proxies = [\"10.0.0.0/8\", \"fd00::1\"]\n\
         scheme = \"stripe\"\n\
         secret_envs = [\"FINCODE_WEBHOOK_SECRET_OLD\", \"FINCODE_WEBHOOK_SECRET\"]\n\
         hmac_algorithm = \"sha512\"\n\
         hmac_encoding = \"base64\"\n\
         signature_header = \"Stripe-Signature\"\n\
         signature_prefix = \"sha512=\"\n\
         tolerance = \"30s\"\n\
         dedupe_key = \"id-{{/data/id}}-{{header:webhook-id}}\"\n\
         order_key = \"{{Reference}}\"\n\
         deliver_to = \"http://127.0.0.1:3000/webhooks/fincode\"\n\
         signing_secret_env = \"FINCODE_SIDECAR_WEBHOOK_SIGNING_SECRET\"\n\
         delivery_timeout = \"3s\"\n\
         lease = \"45s\"\n\
         delivery_concurrency = 4\n\
         max_attempts = 1000\n\
         max_age = \"1s\"\nretention = \"2days\"\ndedupe_retention = \"60d\"\n\
         backoff_base = \"100ms\"\n\
         backoff_cap = \"100ms\"\n\
         confirm_by_query = true\n\
         confirm_path = \"/transactionmanagement/transactions/{{/data/id}}?shop={{ShopId}}\"\n\
         confirm_status_pointer = \"/data/a~1b\"\n\
         admin_token_env = \"FINCODE_SIDECAR_ADMIN_TOKEN\"\n\
         [store]\n\
         sqlite_path = \"/var/lib/fincode-sidecar/not-yet-mounted/events.db\"\n",
        minimal(),
        cert.path(),
        key.path(),
    );
    let (config, warnings) = load_ok(&text, &[]);
    assert_eq!(keys(&warnings), ["auth.mode"]);
    let net = |s: &str| s.parse::<ipnet::IpNet>().unwrap();
    assert_eq!(
        config.webhooks,
        WebhooksConfig {
            enabled: true,
            listen: "127.0.0.1:18081".parse().unwrap(),
            paths: vec![
                "/webhooks/fincode".to_owned(),
                "/webhooks/fincode-v2".to_owned()
            ],
            max_body_bytes: 64 * 1024 * 1024,
            max_unverified_bytes: 128 * 1024 * 1024,
            body_read_timeout: Duration::from_secs(7),
            tls_cert_file: Some(cert.path().to_owned()),
            tls_key_file: Some(key.path().to_owned()),
            allow_ips: vec![
                net("203.0.113.0/24"),
                net("198.51.100.7/32"),
                net("2001:db8::/32"),
                net("2001:db8::7/128"),
            ],
            trusted_proxies: vec![net("10.0.0.0/8"), net("fd00::1/128")],
            scheme: WebhookScheme::Stripe,
            secret_envs: vec![
                "FINCODE_WEBHOOK_SECRET_OLD".to_owned(),
                "FINCODE_WEBHOOK_SECRET".to_owned(),
            ],
            hmac_algorithm: HmacAlgorithm::Sha512,
            hmac_encoding: HmacEncoding::Base64,
            // Header names ignore case; kept lower-case like every other header name.
            signature_header: Some("stripe-signature".to_owned()),
            signature_prefix: "sha512=".to_owned(),
            tolerance: Duration::from_secs(30),
            dedupe_key: tpl("id-{/data/id}-{header:webhook-id}"),
            order_key: Some(tpl("{Reference}")),
            deliver_to: Some(Uri::from_static("http://127.0.0.1:3000/webhooks/fincode")),
            signing_secret_env: Some("FINCODE_SIDECAR_WEBHOOK_SIGNING_SECRET".to_owned()),
            delivery_timeout: Duration::from_secs(3),
            lease: Duration::from_secs(45),
            delivery_concurrency: 4,
            max_attempts: 1000,
            max_age: Duration::from_secs(1),
            retention: Duration::from_hours(48),
            dedupe_retention: Duration::from_hours(60 * 24),
            backoff_base: Duration::from_millis(100),
            backoff_cap: Duration::from_millis(100),
            confirm_by_query: true,
            confirm_path: tpl("/transactionmanagement/transactions/{/data/id}?shop={ShopId}"),
            confirm_status_pointer: "/data/a~1b".to_owned(),
            admin_token_env: Some("FINCODE_SIDECAR_ADMIN_TOKEN".to_owned()),
        }
    );
    assert_eq!(
        config.store,
        StoreBackend::Sqlite {
            path: "/var/lib/fincode-sidecar/not-yet-mounted/events.db".into()
        }
    );
}

#[test]
fn allow_lists_take_cidrs_and_plain_addresses_of_both_families() {
    let text = format!(
        "{}[webhooks]\nallow_ips = [\"203.0.113.0/24\", \"198.51.100.7\", \"2001:db8::/32\", \
         \"::1\", \"10.1.2.3/8\"]\ntrusted_proxies = [\"0.0.0.0/0\", \"::/0\"]\n",
        minimal()
    );
    let (config, _) = load_ok(&text, &[]);
    let ips = &config.webhooks.allow_ips;
    let shown: Vec<String> = ips.iter().map(ToString::to_string).collect();
    // A plain address is that one address; a range is kept as written.
    assert_eq!(
        shown,
        [
            "203.0.113.0/24",
            "198.51.100.7/32",
            "2001:db8::/32",
            "::1/128",
            "10.1.2.3/8"
        ]
    );
    let addr = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
    assert!(ips[0].contains(&addr("203.0.113.200")));
    assert!(ips[1].contains(&addr("198.51.100.7")) && !ips[1].contains(&addr("198.51.100.8")));
    assert!(ips[2].contains(&addr("2001:db8:ffff::1")));
    assert!(ips[3].contains(&addr("::1")) && !ips[3].contains(&addr("::2")));
    assert!(ips[4].contains(&addr("10.200.0.1")));
    assert_eq!(config.webhooks.trusted_proxies.len(), 2);

    // Every bad entry is reported under its own index, and good ones are not.
    let text =
        minimal_and("[webhooks]\nallow_ips = [\"bad\", \"10.0.0.0/8\", \"2001:db8::/200\"]\n");
    let problems = errors(&text, &[]);
    assert_eq!(
        keys(&problems),
        ["webhooks.allow_ips[0]", "webhooks.allow_ips[2]"]
    );
    assert_eq!(problems[1].value.as_deref(), Some("\"2001:db8::/200\""));
}

#[test]
fn template_errors_say_where() {
    let cases = [
        (
            "{eventType}:{Reference:{Status}",
            "'{' at character 24 is inside the placeholder opened at character 13",
        ),
        (
            "{eventType}:Reference}",
            "'}' at character 22 closes no placeholder",
        ),
        (
            "{eventType}:{Status",
            "the '{' at character 13 is never closed",
        ),
        // Positions count characters, not bytes.
        ("é{", "the '{' at character 2 is never closed"),
        ("{a}:{}", "the placeholder at character 5 is empty"),
    ];
    for (template, expected) in cases {
        let text = format!("{}[webhooks]\ndedupe_key = \"{template}\"\n", minimal());
        let problems = errors(&text, &[]);
        assert_eq!(keys(&problems), ["webhooks.dedupe_key"], "{template}");
        assert_eq!(problems[0].message, expected, "{template}");
        assert!(
            problems[0].fix.contains("{/json/pointer}"),
            "{}",
            problems[0]
        );
        assert_eq!(
            problems[0].value,
            Some(format!("\"{template}\"")),
            "templates are not secret, so they are shown"
        );
    }

    for good in [
        "{eventType}:{Reference}:{Status}",
        "{/data/id}",
        "{/a~1b/~0c}",
        "{header:webhook-id}",
        "{header:Webhook-Id}",
        "shop-{shop_id}-{order-id}",
    ] {
        let text = format!(
            "{}[webhooks]\ndedupe_key = \"{good}\"\norder_key = \"{good}\"\n",
            minimal()
        );
        let (config, _) = load_ok(&text, &[]);
        assert_eq!(config.webhooks.dedupe_key.to_string(), good);
        assert_eq!(
            config.webhooks.order_key.map(|t| t.to_string()).as_deref(),
            Some(good)
        );
    }

    // confirm_path takes placeholders but needs none.
    for good in [
        "/transactionmanagement/transactions",
        "/t/{Reference}?x={/a/b}",
    ] {
        let text = format!("{}[webhooks]\nconfirm_path = \"{good}\"\n", minimal());
        assert_eq!(
            load_ok(&text, &[]).0.webhooks.confirm_path.to_string(),
            good
        );
    }
    // An empty pointer means the whole answer.
    let text = minimal_and("[webhooks]\nconfirm_status_pointer = \"\"\n");
    assert_eq!(load_ok(&text, &[]).0.webhooks.confirm_status_pointer, "");
}

#[test]
fn enabled_webhooks_need_a_destination_a_signing_secret_and_verification_secrets() {
    let text = minimal_and("[webhooks]\nenabled = true\n");
    let problems = errors(&text, &[]);
    assert_eq!(
        keys(&problems),
        [
            "webhooks.deliver_to",
            "webhooks.signing_secret_env",
            "webhooks.secret_envs",
        ],
        "{problems:#?}"
    );
    assert!(problems.iter().all(|p| p.message.contains("required")));
    assert!(
        problems[0]
            .fix
            .contains("\"http://127.0.0.1:3000/webhooks/fincode\"")
    );
    assert!(problems[1].fix.contains("whsec_"));
    assert!(problems[2].fix.contains("[\"FINCODE_WEBHOOK_SECRET\"]"));

    // The same keys, switched off, are fine: nothing is checked for a listener that never runs.
    let text = minimal_and("[webhooks]\nenabled = false\nscheme = \"none\"\n");
    let (config, warnings) = load_ok(&text, &[]);
    assert_eq!(config.webhooks.scheme, WebhookScheme::None);
    assert_eq!(keys(&warnings), ["auth.mode"]);

    // The realistic set-up from config.example.toml loads cleanly.
    let (config, warnings) = load_ok(&webhooks_on(""), &[]);
    assert!(config.webhooks.enabled);
    assert_eq!(keys(&warnings), ["auth.mode"]);
}

#[test]
fn unsigned_webhooks_need_an_allow_list_and_are_warned_about_unless_confirmed() {
    // scheme = "none" needs no secret_envs, but always allow_ips.
    let base = format!(
        "{}[webhooks]\nenabled = true\nscheme = \"none\"\n\
         deliver_to = \"http://127.0.0.1:3000/webhooks/fincode\"\n\
         signing_secret_env = \"FINCODE_SIDECAR_WEBHOOK_SIGNING_SECRET\"\n",
        minimal()
    );
    for confirm in ["false", "true"] {
        let text = format!("{base}confirm_by_query = {confirm}\n");
        let problems = errors(&text, &[]);
        assert_eq!(keys(&problems), ["webhooks.allow_ips"], "{confirm}");
        assert!(
            problems[0].message.contains("fake payment events"),
            "{}",
            problems[0]
        );
        assert!(problems[0].fix.contains("allow_ips = [\"203.0.113.0/24\"]"));
    }

    let text = format!("{base}allow_ips = [\"203.0.113.0/24\"]\n");
    let (_, warnings) = load_ok(&text, &[]);
    // Sorted like the file: [auth] comes before [webhooks].
    assert_eq!(keys(&warnings), ["auth.mode", "webhooks.confirm_by_query"]);
    let warning = &warnings[1];
    assert_eq!(warning.severity, Severity::Warning);
    assert_eq!(warning.value.as_deref(), Some("false"));
    assert!(warning.message.contains("delivered unconfirmed"));
    assert!(warning.fix.contains("confirm_by_query = true"));

    let text = format!("{text}confirm_by_query = true\n");
    let (_, warnings) = load_ok(&text, &[]);
    assert_eq!(keys(&warnings), ["auth.mode"]);
}

#[test]
fn tls_needs_both_files() {
    let cert = pem_file(PEM);
    let key = pem_file(PEM_KEY);
    let cert_line = format!("tls_cert_file = {:?}\n", cert.path());
    let key_line = format!("tls_key_file = {:?}\n", key.path());

    let text = format!("{}[webhooks]\n{cert_line}", minimal());
    only_problem(
        &text,
        "webhooks.tls_key_file",
        "required when webhooks.tls_cert_file is set",
    );

    let text = format!("{}[webhooks]\n{key_line}", minimal());
    only_problem(
        &text,
        "webhooks.tls_cert_file",
        "required when webhooks.tls_key_file is set",
    );

    let text = format!("{}[webhooks]\n{cert_line}{key_line}", minimal());
    let (config, _) = load_ok(&text, &[]);
    assert_eq!(config.webhooks.tls_cert_file.as_deref(), Some(cert.path()));
    assert_eq!(config.webhooks.tls_key_file.as_deref(), Some(key.path()));

    // Each file must hold what its key says; the key file's contents are never shown.
    let text = format!(
        "{}[webhooks]\ntls_cert_file = {:?}\ntls_key_file = {:?}\n",
        minimal(),
        key.path(),
        cert.path()
    );
    let problems = errors(&text, &[]);
    assert_eq!(
        keys(&problems),
        ["webhooks.tls_cert_file", "webhooks.tls_key_file"]
    );
    assert!(problems[0].message.contains("no PEM certificate"));
    assert!(problems[1].message.contains("no PEM private key"));
}

#[test]
fn webhook_listener_cannot_share_a_port_when_enabled() {
    let clash = webhooks_on("listen = \"0.0.0.0:9090\"\n");
    only_problem(&clash, "webhooks.listen", "clashes with listen.admin");

    let clash = webhooks_on("listen = \"127.0.0.1:8080\"\n");
    assert!(
        errors(&clash, &[])[0]
            .message
            .contains("clashes with listen.egress")
    );

    // Off, it binds nothing.
    let text = minimal_and("[webhooks]\nlisten = \"0.0.0.0:9090\"\n");
    load_ok(&text, &[]);
}

#[test]
fn env_overlay_reaches_webhooks_and_store() {
    let (config, _) = load_ok(
        &webhooks_on(""),
        &[
            (
                "FINCODE_SIDECAR__WEBHOOKS__ALLOW_IPS",
                "[\"203.0.113.0/24\", \"2001:db8::7\"]",
            ),
            ("FINCODE_SIDECAR__WEBHOOKS__SCHEME", "standard-webhooks"),
            ("FINCODE_SIDECAR__WEBHOOKS__MAX_ATTEMPTS", "3"),
            ("FINCODE_SIDECAR__STORE__SQLITE_PATH", "/data/events.db"),
        ],
    );
    assert_eq!(config.webhooks.allow_ips.len(), 2);
    assert_eq!(config.webhooks.scheme, WebhookScheme::StandardWebhooks);
    assert_eq!(config.webhooks.max_attempts, 3);
    assert_eq!(
        config.store,
        StoreBackend::Sqlite {
            path: "/data/events.db".into()
        }
    );

    // A bad item set from a variable is blamed on that variable.
    let var = "FINCODE_SIDECAR__WEBHOOKS__ALLOW_IPS";
    let problem = env_problem(
        &minimal(),
        var,
        "[\"10.0.0.0/8\", \"nope\"]",
        "webhooks.allow_ips[1]",
    );
    assert!(problem.to_string().contains(&format!("(from {var})")));
}

#[test]
fn webhook_secrets_are_never_echoed() {
    // A secret pasted where a variable name belongs, in a list or a single key.
    let text = format!(
        "{}[webhooks]\nsecret_envs = [\"OK_NAME\", \"whsec_{CANARY}\"]\n\
         signing_secret_env = \"whsec_{CANARY}=\"\n",
        minimal()
    );
    let err = assert_no_canary(&text, &[]);
    assert_eq!(
        keys(err.problems()),
        [
            "webhooks.secret_envs[1]",
            "webhooks.signing_secret_env",
            "auth.mode"
        ]
    );
    assert!(err.problems()[..2].iter().all(|p| p.value.is_none()));

    // A URL with a password.
    let text = format!(
        "{}[webhooks]\ndeliver_to = \"http://app:{CANARY}@127.0.0.1:3000/hooks\"\n",
        minimal()
    );
    let err = assert_no_canary(&text, &[]);
    assert_eq!(keys(err.problems())[0], "webhooks.deliver_to");
    assert!(err.problems()[0].message.contains("user name or password"));

    // The secret itself under a made-up key: refused, with the *_env key to use instead.
    let text = format!(
        "{}[webhooks]\nsigning_secret = \"whsec_{CANARY}\"\n",
        minimal()
    );
    let err = assert_no_canary(&text, &[]);
    let problem = &err.problems()[0];
    assert_eq!(problem.key, "webhooks.signing_secret");
    assert!(problem.message.contains("secrets are never written"));
    assert!(
        problem.fix.contains("set webhooks.signing_secret_env = "),
        "{problem}"
    );
}

fn tpl(text: &str) -> crate::KeyTemplate {
    crate::KeyTemplate::parse(text).unwrap()
}

#[test]
fn oaep_mgf1_and_device_id_are_configurable() {
    let text = minimal_and("[auth]\noaep_mgf1 = \"sha256\"\ndevice_id = \"device-7\"\n");
    let (config, _) = load_ok(&text, &[]);
    assert_eq!(config.auth.oaep_mgf1, OaepMgf1::Sha256);
    assert_eq!(config.auth.device_id, "device-7");
}

#[test]
fn public_key_file_may_be_bare_base64_as_the_dashboard_shows_it_or_pem() {
    let dir = tempfile::tempdir().unwrap();
    // The start of a real RSA-2048 SPKI; the auth crate parses the key itself.
    let bare = "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAu1SU1LfVLPHCozMxH2Mo\r\n4lgOEePzNm0tRgeLezV6ffAt0gun\n";
    let pem = format!("-----BEGIN PUBLIC KEY-----\n{bare}-----END PUBLIC KEY-----\n");
    for (name, contents, ok) in [
        ("bare.b64", bare.to_owned(), true),
        ("key.pem", pem, true),
        ("junk.txt", "not a key: at all".to_owned(), false),
        ("empty.txt", " \n".to_owned(), false),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, contents).unwrap();
        let text = format!(
            "{}[auth]\nmode = \"login\"\nemail_env = \"E\"\npassword_env = \"P\"\npublic_key_file = \"{}\"\n",
            minimal(),
            path.display()
        );
        let vars = [("E", "a@b.c"), ("P", "pw")];
        if ok {
            load_ok(&text, &vars);
        } else {
            let problems = errors(&text, &vars);
            // (A second problem follows from the first: login mode is left without a key.)
            assert_eq!(keys(&problems)[0], "auth.public_key_file", "{name}");
            let shown = problems[0].to_string();
            assert!(shown.contains("Base64") && shown.contains("PEM"), "{shown}");
        }
    }
}

// --- auth: rejected logins and 401 renewal ---

fn login_section(extra: &str) -> String {
    format!(
        "{}[auth]\nmode = \"login\"\nemail_env = \"E\"\npassword_env = \"P\"\npublic_key_env = \"K\"\n{extra}",
        minimal()
    )
}

#[test]
fn rejected_login_retry_and_401_min_age_have_safe_defaults() {
    let (config, _) = load_ok(&login_section(""), &[]);
    assert_eq!(
        config.auth.login_retry_after_rejection,
        Duration::from_hours(1)
    );
    assert_eq!(config.auth.renew_on_401_min_age, Duration::from_secs(10));
    let (config, _) = load_ok(
        &login_section("login_retry_after_rejection = \"10m\"\nrenew_on_401_min_age = \"0s\"\n"),
        &[],
    );
    assert_eq!(
        config.auth.login_retry_after_rejection,
        Duration::from_mins(10)
    );
    assert_eq!(config.auth.renew_on_401_min_age, Duration::ZERO);
}

#[test]
fn a_rejected_login_is_never_retried_sooner_than_a_failing_one() {
    let problems = errors(
        &login_section("login_retry_after_rejection = \"1m\"\n"),
        &[],
    );
    assert_eq!(keys(&problems), ["auth.login_retry_after_rejection"]);
    assert!(
        problems[0].message.contains("auth.login_backoff_max"),
        "{}",
        problems[0].message
    );
    let problems = errors(
        &login_section("login_retry_after_rejection = \"0s\"\n"),
        &[],
    );
    assert_eq!(keys(&problems), ["auth.login_retry_after_rejection"]);
}

#[test]
fn a_401_min_age_past_the_token_lifetime_is_refused() {
    let problems = errors(&login_section("renew_on_401_min_age = \"2h\"\n"), &[]);
    assert_eq!(keys(&problems), ["auth.renew_on_401_min_age"]);
}

// --- listeners ---

#[test]
fn listener_limits_have_per_listener_defaults_and_read_every_key() {
    let (config, _) = load_ok(&minimal(), &[]);
    assert_eq!(config.listeners.admin.max_connections, 64);
    assert_eq!(config.listeners.egress.max_connections, 1024);
    assert_eq!(
        config.listeners.egress.header_read_timeout,
        Duration::from_secs(30)
    );
    assert_eq!(
        config.listeners.webhooks.header_read_timeout,
        Duration::from_secs(10)
    );

    let text = format!(
        "{}[listeners.admin]\n\
         header_read_timeout = \"2s\"\n\
         idle_timeout = \"3s\"\n\
         max_connections = 5\n\
         http2_max_concurrent_streams = 7\n\
         http2_keepalive_interval = \"0s\"\n\
         http2_keepalive_timeout = \"4s\"\n\
         stall_timeout = \"5s\"\n",
        minimal()
    );
    let (config, _) = load_ok(
        &text,
        &[("FINCODE_SIDECAR__LISTENERS__WEBHOOKS__MAX_CONNECTIONS", "9")],
    );
    assert_eq!(
        config.listeners.admin,
        ListenerLimits {
            header_read_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(3),
            max_connections: 5,
            http2_max_concurrent_streams: 7,
            http2_keepalive_interval: Duration::ZERO,
            http2_keepalive_timeout: Duration::from_secs(4),
            stall_timeout: Duration::from_secs(5),
        }
    );
    assert_eq!(config.listeners.webhooks.max_connections, 9);
    assert_eq!(config.listeners.egress, ListenersConfig::default().egress);
}

#[test]
fn listener_limits_are_validated_and_unknown_ones_named() {
    for (section, line, key) in [
        (
            "admin",
            "max_connections = 0",
            "listeners.admin.max_connections",
        ),
        (
            "egress",
            "header_read_timeout = \"0s\"",
            "listeners.egress.header_read_timeout",
        ),
        (
            "webhooks",
            "http2_max_concurrent_streams = 0",
            "listeners.webhooks.http2_max_concurrent_streams",
        ),
        (
            "admin",
            "max_conections = 3",
            "listeners.admin.max_conections",
        ),
        ("egres", "max_connections = 3", "listeners.egres"),
    ] {
        let text = format!("{}[listeners.{section}]\n{line}\n", minimal());
        let problems = errors(&text, &[]);
        assert!(
            problems.iter().any(|p| p.key == key),
            "{line}: expected a problem at {key}, got {problems:?}"
        );
    }
}

#[test]
fn unverified_budget_must_hold_one_largest_body() {
    let text = minimal_and("[webhooks]\nmax_body_bytes = 65536\nmax_unverified_bytes = 1000\n");
    let problems = errors(&text, &[]);
    let problem = problems
        .iter()
        .find(|p| p.key == "webhooks.max_unverified_bytes")
        .expect("a problem at webhooks.max_unverified_bytes");
    assert!(problem.message.contains("webhooks.max_body_bytes"));
}

#[test]
fn stall_timeouts_must_outlast_the_honest_waits() {
    for (text, key) in [
        (
            "[listeners.egress]\nstall_timeout = \"30s\"\n",
            "listeners.egress.stall_timeout",
        ),
        (
            "[webhooks]\nbody_read_timeout = \"20s\"\n[listeners.webhooks]\nstall_timeout = \"15s\"\n",
            "listeners.webhooks.stall_timeout",
        ),
    ] {
        let problems = errors(&format!("{}{text}", minimal()), &[]);
        assert!(
            problems.iter().any(|p| p.key == key),
            "{text}: expected a problem at {key}, got {problems:?}"
        );
    }
    // Off, or long enough: fine.
    let text = minimal_and(
        "[listeners.egress]\nstall_timeout = \"45s\"\n[listeners.webhooks]\nstall_timeout = \"0s\"\n",
    );
    let (config, _) = load_ok(&text, &[]);
    assert_eq!(
        config.listeners.egress.stall_timeout,
        Duration::from_secs(45)
    );
    assert_eq!(config.webhooks.body_read_timeout, Duration::from_secs(10));
}

// === [audit] ===

#[test]
fn audit_keys_load_and_an_enabled_trail_needs_both_keys() {
    let text = format!(
        "{}[redact]\nhash_key_env = \"HASH_KEY\"\n\
         [audit]\nenabled = true\ndir = \"/var/lib/audit\"\nsigning_key_env = \"AUDIT_KEY\"\n\
         actor = \"checkout\"\nfsync = \"never\"\nfail_closed = true\nqueue = 10\n\
         checkpoint_every = 5\ncheckpoint_interval = \"2s\"\nmax_segment_bytes = 4096\n\
         max_segment_age = \"1h\"\nretention = \"500d\"\n",
        minimal()
    );
    let (config, warnings) = load_ok(&text, &[]);
    assert!(
        !keys(&warnings).contains(&"audit.retention"),
        "{warnings:?}"
    );
    let audit = &config.audit;
    assert!(audit.enabled && audit.fail_closed);
    assert_eq!(audit.dir, std::path::PathBuf::from("/var/lib/audit"));
    assert_eq!(audit.signing_key_env.as_deref(), Some("AUDIT_KEY"));
    assert_eq!(audit.actor.as_deref(), Some("checkout"));
    assert_eq!(audit.fsync, fincode_config_audit_fsync_never());
    assert_eq!((audit.queue, audit.checkpoint_every), (10, 5));
    assert_eq!(audit.max_segment_bytes, 4096);
    assert_eq!(audit.retention, Duration::from_hours(500 * 24));
    // The variables are checked at start-up, by name, never echoing a value.
    let missing = config.check_environment(&env(&[("HASH_KEY", "k")]));
    assert_eq!(keys(&missing), ["audit.signing_key_env"]);

    let bare = minimal_and("[audit]\nenabled = true\n");
    assert_eq!(
        keys(&errors(&bare, &[])),
        ["redact.hash_key_env", "audit.signing_key_env"]
    );
}

fn fincode_config_audit_fsync_never() -> crate::AuditFsync {
    crate::AuditFsync::Never
}

#[test]
fn bad_audit_values_name_their_keys_and_a_short_retention_is_warned_about() {
    let text = minimal_and(
        "[audit]\nfsync = \"sometimes\"\nqueue = 0\ncheckpoint_every = -1\nretention = \"10s\"\ndir = \"\"\n",
    );
    assert_eq!(
        keys(&errors(&text, &[])),
        [
            "audit.dir",
            "audit.fsync",
            "audit.queue",
            "audit.checkpoint_every",
            "audit.retention"
        ]
    );
    let short = minimal_and(
        "[redact]\nhash_key_env = \"H\"\n[audit]\nenabled = true\nsigning_key_env = \"S\"\nretention = \"30d\"\n",
    );
    let (_, warnings) = load_ok(&short, &[]);
    assert!(keys(&warnings).contains(&"audit.retention"), "{warnings:?}");
}

// --- store: Postgres ---

const PG_URL: &str = "postgres://sidecar@db.internal:5432/payments";

/// `[store]` with `url` and `extra` lines.
fn postgres(url: &str, extra: &str) -> String {
    format!("{}[store]\nurl = \"{url}\"\n{extra}", minimal())
}

#[test]
fn a_url_selects_postgres_with_safe_defaults() {
    for url in [PG_URL, "postgresql://sidecar@db.internal/payments"] {
        let (config, warnings) = load_ok(&postgres(url, ""), &[]);
        assert_eq!(
            config.store,
            StoreBackend::Postgres(PostgresStoreConfig {
                url: url.to_owned(),
                password_env: None,
                // Encrypted and verified unless the operator says otherwise.
                tls: StoreTls::VerifyFull { ca_file: None },
                pool_size: 8,
                schema: "fincode_sidecar".to_owned(),
            })
        );
        assert_eq!(
            config.store,
            StoreBackend::Postgres(PostgresStoreConfig::new(url))
        );
        assert_eq!(keys(&warnings), ["auth.mode"]);
    }
    // Multi-host URLs and IPv6 literals are URLs too.
    for url in [
        "postgres://sidecar@db-a:5432,db-b:5433/payments",
        "postgres://sidecar@[2001:db8::7]:5432/payments",
        "postgres://db.internal",
    ] {
        load_ok(&postgres(url, ""), &[]);
    }
}

#[test]
fn every_postgres_store_key_is_read() {
    let ca = pem_file(PEM);
    let text = postgres(
        PG_URL,
        &format!(
            "password_env = \"FINCODE_STORE_PASSWORD\"\ntls = \"verify-full\"\nca_file = {:?}\n\
             pool_size = 64\nschema = \"sidecar_2\"\n",
            ca.path()
        ),
    );
    let (config, warnings) = load_ok(&text, &[]);
    assert_eq!(keys(&warnings), ["auth.mode"]);
    assert_eq!(
        config.store,
        StoreBackend::Postgres(PostgresStoreConfig {
            url: PG_URL.to_owned(),
            password_env: Some("FINCODE_STORE_PASSWORD".to_owned()),
            tls: StoreTls::VerifyFull {
                ca_file: Some(ca.path().to_owned())
            },
            pool_size: 64,
            schema: "sidecar_2".to_owned(),
        })
    );
    // The edges of each range.
    let longest = format!("_{}", "a9".repeat(31));
    assert_eq!(longest.len(), 63);
    let text = postgres(
        PG_URL,
        &format!("pool_size = 1\nschema = \"{longest}\"\ntls = \"disable\"\n"),
    );
    let StoreBackend::Postgres(pg) = load_ok(&text, &[]).0.store else {
        panic!("not Postgres");
    };
    assert_eq!(
        (pg.pool_size, pg.schema, pg.tls),
        (1, longest, StoreTls::Disable)
    );
}

#[test]
fn bad_postgres_store_values_name_their_keys_and_the_fix() {
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "mysql://db/payments",
            "",
            "store.url",
            "must be postgres:// or postgresql://",
        ),
        (
            "https://db/payments",
            "",
            "store.url",
            "must be postgres:// or postgresql://",
        ),
        ("postgres:///payments", "", "store.url", "names no host"),
        (
            "postgres://sidecar@:5432/payments",
            "",
            "store.url",
            "names no host",
        ),
        (
            "postgres://db:99999/payments",
            "",
            "store.url",
            "port must be a number",
        ),
        (
            "postgres://db:0/payments",
            "",
            "store.url",
            "port must be a number",
        ),
        (
            "postgres://db:x/payments",
            "",
            "store.url",
            "port must be a number",
        ),
        ("postgres://db/payments#main", "", "store.url", "fragment"),
        (
            PG_URL,
            "password_env = \"hunter 2\"",
            "store.password_env",
            "must name an environment variable",
        ),
        (
            PG_URL,
            "tls = \"require\"",
            "store.tls",
            "expected \"verify-full\" or \"disable\"",
        ),
        (
            PG_URL,
            "tls = true",
            "store.tls",
            "expected \"verify-full\" or \"disable\"",
        ),
        (
            PG_URL,
            "ca_file = \"/nonexistent/ca.pem\"",
            "store.ca_file",
            "file not found",
        ),
        (
            PG_URL,
            "pool_size = 0",
            "store.pool_size",
            "between 1 and 64",
        ),
        (
            PG_URL,
            "pool_size = 65",
            "store.pool_size",
            "between 1 and 64",
        ),
        (
            PG_URL,
            "pool_size = -1",
            "store.pool_size",
            "non-negative integer",
        ),
        (
            PG_URL,
            "schema = \"Fincode\"",
            "store.schema",
            "plain SQL identifier",
        ),
        (
            PG_URL,
            "schema = \"1st\"",
            "store.schema",
            "plain SQL identifier",
        ),
        (
            PG_URL,
            "schema = \"fin-code\"",
            "store.schema",
            "plain SQL identifier",
        ),
        (
            PG_URL,
            "schema = \"public; drop\"",
            "store.schema",
            "plain SQL identifier",
        ),
        (
            PG_URL,
            "schema = \"\"",
            "store.schema",
            "plain SQL identifier",
        ),
    ];
    for (url, line, key, expected) in cases {
        let text = postgres(url, &format!("{line}\n"));
        let problems = errors(&text, &[]);
        assert_eq!(
            keys(&problems),
            [*key],
            "for `{url}` `{line}`: {problems:#?}"
        );
        assert!(
            problems[0].message.contains(expected),
            "for `{url}` `{line}`: {}",
            problems[0]
        );
        assert!(!problems[0].fix.is_empty());
    }
    let text = minimal_and("[store]\nurl = 5432\n");
    let problems = errors(&text, &[]);
    assert_eq!(keys(&problems), ["store.url"]);
    assert!(problems[0].message.contains("expected a URL string"));
    let too_long = format!("a{}", "b".repeat(63));
    let problems = errors(
        &postgres(PG_URL, &format!("schema = \"{too_long}\"\n")),
        &[],
    );
    assert_eq!(keys(&problems), ["store.schema"]);
}

#[test]
fn a_password_or_query_in_the_store_url_is_refused_and_never_echoed() {
    let err = assert_no_canary(
        &postgres(
            &format!("postgres://sidecar:{CANARY}@db.internal/payments"),
            "",
        ),
        &[],
    );
    let problem = &err.problems()[0];
    assert_eq!(problem.key, "store.url");
    assert_eq!(problem.value, None);
    assert!(problem.message.contains("contains a password"), "{problem}");
    assert!(
        problem
            .fix
            .contains("the variable store.password_env names"),
        "{problem}"
    );
    // An empty password is still the password slot.
    let problems = errors(
        &postgres("postgres://sidecar:@db.internal/payments", ""),
        &[],
    );
    assert!(problems[0].message.contains("contains a password"));

    // Query parameters: a password by another name, or settings that would fight the keys.
    for query in [
        format!("password={CANARY}"),
        "sslmode=disable".to_owned(),
        format!("sslmode=require&password={CANARY}"),
    ] {
        let err = assert_no_canary(&postgres(&format!("{PG_URL}?{query}"), ""), &[]);
        let problem = &err.problems()[0];
        assert_eq!(problem.key, "store.url", "{query}");
        assert_eq!(problem.value, None);
        assert!(problem.message.contains("query parameters"), "{problem}");
        assert!(
            problem.fix.contains("store.tls") && problem.fix.contains("store.password_env"),
            "{problem}"
        );
    }

    // From the environment too, blamed on the variable.
    let var = "FINCODE_SIDECAR__STORE__URL";
    let leaked = format!("postgres://sidecar:{CANARY}@db.internal/payments");
    let err = assert_no_canary(&minimal(), &[(var, leaked.as_str())]);
    assert_eq!(err.problems()[0].key, "store.url");
    assert_eq!(err.problems()[0].source, Source::Env(var.to_owned()));
    // A scheme that is not Postgres is not echoed either: it could be any URL with a secret.
    let err = assert_no_canary(
        &postgres(&format!("mysql://sidecar:{CANARY}@db/payments"), ""),
        &[],
    );
    assert_eq!(err.problems()[0].value, None);
}

#[test]
fn sqlite_path_and_url_together_are_refused_saying_which_to_drop() {
    let text = postgres(PG_URL, "sqlite_path = \"/data/events.db\"\n");
    let problems = errors(&text, &[]);
    assert_eq!(keys(&problems), ["store.sqlite_path"]);
    assert!(problems[0].message.contains("together with store.url"));
    assert!(
        problems[0]
            .fix
            .contains("drop store.sqlite_path to use Postgres")
            && problems[0]
                .fix
                .contains("drop store.url to keep the SQLite file"),
        "{}",
        problems[0]
    );
    // Also when one of them comes from the environment.
    let text = minimal_and("[store]\nsqlite_path = \"/data/events.db\"\n");
    let problems = errors(&text, &[("FINCODE_SIDECAR__STORE__URL", PG_URL)]);
    assert_eq!(keys(&problems), ["store.sqlite_path"]);
}

#[test]
fn a_ca_file_with_tls_disabled_is_refused() {
    let ca = pem_file(PEM);
    let text = postgres(
        "postgres://sidecar@127.0.0.1/payments",
        &format!("tls = \"disable\"\nca_file = {:?}\n", ca.path()),
    );
    let problems = errors(&text, &[]);
    assert_eq!(keys(&problems), ["store.ca_file"]);
    assert!(problems[0].message.contains("store.tls = \"disable\""));
    assert!(problems[0].fix.contains("verify-full"));
}

#[test]
fn tls_disabled_is_warned_about_unless_every_host_is_loopback() {
    for url in [
        "postgres://sidecar@localhost/payments",
        "postgres://sidecar@LOCALHOST:5432/payments",
        "postgres://sidecar@127.0.0.1:5432/payments",
        "postgres://sidecar@127.8.9.10/payments",
        "postgres://sidecar@[::1]:5432/payments",
        "postgres://127.0.0.1:5432,[::1]:5433/payments",
    ] {
        let (config, warnings) = load_ok(&postgres(url, "tls = \"disable\"\n"), &[]);
        assert_eq!(keys(&warnings), ["auth.mode"], "{url}");
        let StoreBackend::Postgres(pg) = config.store else {
            panic!("not Postgres");
        };
        assert_eq!(pg.tls, StoreTls::Disable);
    }
    for url in [
        PG_URL,
        "postgres://sidecar@10.0.0.5/payments",
        "postgres://127.0.0.1,db.internal/payments",
        "postgres://[2001:db8::7]/payments",
    ] {
        let (_, warnings) = load_ok(&postgres(url, "tls = \"disable\"\n"), &[]);
        assert_eq!(keys(&warnings), ["auth.mode", "store.tls"], "{url}");
        assert_eq!(warnings[1].severity, Severity::Warning);
        assert!(warnings[1].message.contains("not encrypted"));
        assert!(warnings[1].fix.contains("verify-full"));
    }
}

#[test]
fn postgres_keys_without_a_url_are_ignored_with_a_warning() {
    let text =
        minimal_and("[store]\nsqlite_path = \"/data/events.db\"\npool_size = 4\nschema = \"x\"\n");
    let (config, warnings) = load_ok(&text, &[]);
    assert_eq!(
        config.store,
        StoreBackend::Sqlite {
            path: "/data/events.db".into()
        }
    );
    assert_eq!(
        keys(&warnings),
        ["auth.mode", "store.pool_size", "store.schema"]
    );
    assert!(warnings[1].message.contains("store.url is not set"));
    // Still checked, so switching to Postgres brings no surprise.
    let text = minimal_and("[store]\npool_size = 0\n");
    assert_eq!(keys(&errors(&text, &[])), ["store.pool_size"]);
}

#[test]
fn env_overlay_reaches_the_postgres_store_keys() {
    let (config, _) = load_ok(
        &minimal(),
        &[
            ("FINCODE_SIDECAR__STORE__URL", PG_URL),
            ("FINCODE_SIDECAR__STORE__PASSWORD_ENV", "PG_PASSWORD"),
            ("FINCODE_SIDECAR__STORE__TLS", "verify-full"),
            ("FINCODE_SIDECAR__STORE__POOL_SIZE", "16"),
            ("FINCODE_SIDECAR__STORE__SCHEMA", "sidecar_blue"),
        ],
    );
    assert_eq!(
        config.store,
        StoreBackend::Postgres(PostgresStoreConfig {
            url: PG_URL.to_owned(),
            password_env: Some("PG_PASSWORD".to_owned()),
            tls: StoreTls::VerifyFull { ca_file: None },
            pool_size: 16,
            schema: "sidecar_blue".to_owned(),
        })
    );
    // A bad value set from a variable is blamed on that variable.
    let var = "FINCODE_SIDECAR__STORE__POOL_SIZE";
    env_problem(&postgres(PG_URL, ""), var, "100", "store.pool_size");
}

#[test]
fn the_store_password_variable_must_be_set_and_is_never_read_into_a_problem() {
    let text = format!(
        "{}[store]\nurl = \"{PG_URL}\"\npassword_env = \"FINCODE_STORE_PASSWORD\"\n",
        webhooks_on("")
    );
    let (config, _) = load_ok(&text, &[]);
    let secrets = [
        ("FINCODE_WEBHOOK_SECRET", "a"),
        ("FINCODE_SIDECAR_WEBHOOK_SIGNING_SECRET", "b"),
    ];
    let problems = config.check_environment(&env(&secrets));
    assert_eq!(keys(&problems), ["store.password_env"]);
    assert_eq!(
        problems[0].message,
        "environment variable FINCODE_STORE_PASSWORD (named by store.password_env) is not set"
    );
    assert_eq!(problems[0].severity, Severity::Error);
    // Blank is unset.
    let blank = [secrets[0], secrets[1], ("FINCODE_STORE_PASSWORD", " ")];
    assert_eq!(config.check_environment(&env(&blank)).len(), 1);
    let set = [secrets[0], secrets[1], ("FINCODE_STORE_PASSWORD", CANARY)];
    assert!(config.check_environment(&env(&set)).is_empty());
    assert!(config.check_store_environment(&env(&set)).is_empty());

    // Webhooks off: `run` opens no store, but `store status` does.
    let mut off = config.clone();
    off.webhooks.enabled = false;
    assert!(off.check_environment(&Env::default()).is_empty());
    let problems = off.check_store_environment(&Env::default());
    assert_eq!(keys(&problems), ["store.password_env"]);
    for problem in problems {
        assert!(!problem.to_string().contains(CANARY));
    }
    // No variable named, nothing to check (trust or certificate authentication).
    let (config, _) = load_ok(&postgres(PG_URL, ""), &[]);
    assert!(config.check_store_environment(&Env::default()).is_empty());
}

#[test]
fn a_postgres_store_round_trips_and_writes_no_secret() {
    let ca = pem_file(PEM);
    let mut config = Config::with_base_url(Uri::from_static(BASE_URL));
    for store in [
        PostgresStoreConfig {
            url: PG_URL.to_owned(),
            password_env: Some("FINCODE_STORE_PASSWORD".to_owned()),
            tls: StoreTls::VerifyFull {
                ca_file: Some(ca.path().to_owned()),
            },
            pool_size: 3,
            schema: "sidecar".to_owned(),
        },
        PostgresStoreConfig::new("postgresql://127.0.0.1/events"),
        PostgresStoreConfig {
            tls: StoreTls::Disable,
            ..PostgresStoreConfig::new("postgres://[::1]:5433/events")
        },
    ] {
        config.store = StoreBackend::Postgres(store);
        let text = config.to_toml_string();
        assert_eq!(load_ok(&text, &[]).0, config, "{text}");
        assert!(!text.contains("sqlite_path"), "{text}");
    }
    // What the audit trail's config digest hashes: the variable's name, never its value.
    let (config, _) = load_ok(
        &postgres(PG_URL, "password_env = \"FINCODE_STORE_PASSWORD\"\n"),
        &[("FINCODE_STORE_PASSWORD", CANARY)],
    );
    let text = config.to_toml_string();
    assert!(
        text.contains("password_env = \"FINCODE_STORE_PASSWORD\""),
        "{text}"
    );
    assert!(!text.contains(CANARY));
    assert!(!format!("{config:?}").contains(CANARY));
}

// --- shutdown ---

#[test]
fn shutdown_grace_defaults_to_25s_and_takes_1s_to_10m() {
    let (config, _) = load_ok(&minimal(), &[]);
    assert_eq!(config.shutdown.grace, Duration::from_secs(25));
    let (config, _) = load_ok(&minimal_and("[shutdown]\ngrace = \"40s\"\n"), &[]);
    assert_eq!(config.shutdown.grace, Duration::from_secs(40));
    for bad in ["\"500ms\"", "\"11m\"", "\"0s\"", "25", "\"soon\""] {
        let problems = errors(&format!("{}[shutdown]\ngrace = {bad}\n", minimal()), &[]);
        assert_eq!(keys(&problems), ["shutdown.grace"], "{bad}");
        assert!(!problems[0].fix.is_empty(), "{bad}");
    }
}

// --- reload ---

#[test]
fn changed_keys_names_every_changed_leaf_and_nothing_else() {
    let old = Config::with_base_url(Uri::from_static("https://acme.fincode.tech"));
    assert!(old.changed_keys(&old.clone()).is_empty());

    let mut new = old.clone();
    new.rate_limit.per_second = 7;
    new.listen.egress = "127.0.0.1:18081".parse().unwrap();
    new.rate_limit.routes.insert(
        "/transactionmanagement/create-transaction".into(),
        create_limit(),
    );
    assert_eq!(
        old.changed_keys(&new),
        [
            "listen.egress",
            "rate_limit.per_second",
            "rate_limit.routes.\"/transactionmanagement/create-transaction\".burst",
            "rate_limit.routes.\"/transactionmanagement/create-transaction\".per_second",
        ]
    );
    // Symmetric: a key unset on either side counts.
    assert_eq!(new.changed_keys(&old).len(), 4);
}

fn create_limit() -> crate::RouteLimit {
    crate::RouteLimit {
        per_second: 2,
        burst: 1,
    }
}

// --- secrets: one resolver for every *_env key ---

#[test]
fn an_unset_hash_key_variable_is_refused_naming_redact_hash_key_env() {
    // The redactor reads the hash key whenever it is named, audit trail or not.
    let text = minimal_and("[redact]\nhash_key_env = \"HASH_KEY\"\n");
    let (config, _) = load_ok(&text, &[]);
    let problems = config.secrets(&Env::default()).unwrap_err();
    assert_eq!(keys(&problems), ["redact.hash_key_env"]);
    assert_eq!(
        problems[0].message,
        "environment variable HASH_KEY (named by redact.hash_key_env) is not set"
    );
    assert_eq!(
        keys(&config.check_environment(&Env::default())),
        ["redact.hash_key_env"]
    );

    let secrets = config.secrets(&env(&[("HASH_KEY", CANARY)])).unwrap();
    assert!(secrets.hash_key.is_some());
    assert!(!format!("{secrets:?}").contains(CANARY));
}

#[test]
fn secrets_reports_every_unset_variable_at_once_and_reads_the_set_ones() {
    let text = format!(
        "{}[auth]\nmode = \"static\"\ntoken_env = \"TOKEN\"\n[redact]\nhash_key_env = \"HASH\"\n\
         [store]\nurl = \"{PG_URL}\"\npassword_env = \"PG\"\n",
        webhooks_on("")
    );
    let (config, _) = load_ok(&text, &[]);
    let problems = config.secrets(&env(&[("TOKEN", " ")])).unwrap_err();
    assert_eq!(
        keys(&problems),
        [
            "auth.token_env",
            "webhooks.secret_envs[0]",
            "webhooks.signing_secret_env",
            "redact.hash_key_env",
            "store.password_env",
        ]
    );
    let all = [
        ("TOKEN", "t"),
        ("HASH", "h"),
        ("PG", CANARY),
        ("FINCODE_WEBHOOK_SECRET", "w"),
        ("FINCODE_SIDECAR_WEBHOOK_SIGNING_SECRET", "s"),
    ];
    let secrets = config.secrets(&env(&all)).unwrap();
    assert!(secrets.api_token.is_some() && secrets.store_password.is_some());
    assert_eq!(secrets.webhook_secrets.len(), 1);
    assert!(!format!("{secrets:?}").contains(CANARY));
    // The store tools need only the store's password.
    let store = config.store_secrets(&env(&[("PG", CANARY)])).unwrap();
    assert!(store.store_password.is_some() && store.api_token.is_none());
}

#[test]
fn login_mode_names_each_unset_credential_variable_and_its_key() {
    // Moved from the auth crate, which no longer reads the environment: each login
    // variable is named with the key that names it, never with a value.
    let text = minimal_and(
        "[auth]\nmode = \"login\"\nemail_env = \"E\"\npassword_env = \"P\"\npublic_key_env = \"K\"\n",
    );
    let (config, _) = load_ok(&text, &[]);
    let problems = config.secrets(&Env::default()).unwrap_err();
    assert_eq!(
        keys(&problems),
        ["auth.email_env", "auth.password_env", "auth.public_key_env"]
    );
    for (problem, (var, key)) in problems.iter().zip([
        ("E", "auth.email_env"),
        ("P", "auth.password_env"),
        ("K", "auth.public_key_env"),
    ]) {
        assert_eq!(
            problem.message,
            format!("environment variable {var} (named by {key}) is not set")
        );
    }
    let problems = config
        .secrets(&env(&[("E", "a@b.c"), ("P", CANARY), ("K", " ")]))
        .unwrap_err();
    assert_eq!(keys(&problems), ["auth.public_key_env"]);
    assert!(!format!("{problems:?}").contains(CANARY));
    let secrets = config
        .secrets(&env(&[("E", "a@b.c"), ("P", CANARY), ("K", "key")]))
        .unwrap();
    assert!(secrets.login_email.is_some() && secrets.login_password.is_some());
    assert!(secrets.public_key.is_some() && secrets.api_token.is_none());
}

#[test]
fn partial_secrets_keeps_the_set_ones_beside_the_problems() {
    let text = format!(
        "{}[webhooks]\nenabled = true\nsecret_envs = [\"W_OLD\", \"W_NEW\"]\n\
         deliver_to = \"http://127.0.0.1:3000/webhooks/fincode\"\nsigning_secret_env = \"SIGN\"\n\
         [auth]\nmode = \"static\"\ntoken_env = \"TOKEN\"\n[redact]\nhash_key_env = \"HASH\"\n",
        minimal()
    );
    let (config, _) = load_ok(&text, &[]);
    let vars = [("HASH", CANARY), ("W_NEW", "w")];
    let (secrets, problems) = config.partial_secrets(&env(&vars));
    assert_eq!(
        keys(&problems),
        [
            "auth.token_env",
            "webhooks.secret_envs[0]",
            "webhooks.signing_secret_env",
        ]
    );
    assert_eq!(problems, config.secrets(&env(&vars)).unwrap_err());
    assert!(secrets.hash_key.is_some() && secrets.api_token.is_none());
    assert_eq!(secrets.webhook_secrets.len(), 1, "the set one only");
    assert!(!format!("{secrets:?}").contains(CANARY));
}
