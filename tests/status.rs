//! `status` end to end: the real binary reads a running sidecar's admin port after known
//! traffic (through the sidecar to the sandbox over TLS) and shows what was sent; an
//! unreachable admin port exits 1; `--watch` redraws until it is stopped.
#![allow(clippy::unwrap_used)]

mod support;

use std::{
    io::Read as _,
    process::{Command, Stdio},
    time::Duration,
};

use fincode_sandbox::FaultRule;
use support::{BIN, Sidecar, SidecarBuilder, TestSandbox, app_client, get, run_binary, send};

fn status(args: &[&str]) -> (Option<i32>, String) {
    run_binary(Command::new(BIN).arg("status").args(args))
}

/// The screen's line about `topic` (after the 5-character mark).
fn line<'a>(screen: &'a str, topic: &str) -> &'a str {
    screen
        .lines()
        .find(|l| l.get(5..).is_some_and(|rest| rest.starts_with(topic)))
        .unwrap_or_else(|| panic!("no {topic} line in:\n{screen}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_screen_shows_the_traffic_sent_and_marks_errors_red() {
    let sandbox = TestSandbox::start().await;
    let token = sandbox.mint_static_token(Duration::from_hours(1));
    let builder = SidecarBuilder::new(&sandbox)
        .static_token(&token)
        .set("retry.max_attempts", 1);
    let config = builder.config_path();
    let sidecar = builder.start_ready().await;
    let client = app_client();
    let admin = sidecar.admin_url("");

    // 18 calls that succeed.
    for _ in 0..18 {
        let ok = get(&client, &sidecar.url("/transactionmanagement/transactions")).await;
        assert_eq!(ok.status, 200);
    }
    let (code, screen) = status(&["--admin", &admin]);
    assert_eq!(code, Some(0), "{screen}");
    assert!(screen.starts_with("fincode-sidecar status  "), "{screen}");
    assert!(
        line(&screen, "requests")
            .starts_with("OK   requests     18  success 100.0 %  4xx 0.0 %  5xx 0.0 %"),
        "{screen}"
    );
    assert!(line(&screen, "readiness").contains("200 ready"), "{screen}");
    assert!(line(&screen, "breaker").ends_with("closed"), "{screen}");
    assert!(line(&screen, "latency").contains("p50 "), "{screen}");
    assert!(!line(&screen, "latency").contains("p50 -"), "{screen}");
    // A static token's expiry is not known: no countdown, and not a worry.
    assert!(
        line(&screen, "token").starts_with("OK   token        valid (expiry not reported"),
        "{screen}"
    );
    assert!(line(&screen, "webhooks").ends_with("off"), "{screen}");
    assert!(screen.ends_with("overall: all clear\n"), "{screen}");

    // Two that FinCode answers 503 (no retry configured): 2 of 20 = 10 %, red.
    sandbox.add_fault(FaultRule::status(503).times(2));
    for _ in 0..2 {
        let failed = get(&client, &sidecar.url("/transactionmanagement/transactions")).await;
        assert_eq!(failed.status, 503);
    }
    // Found through the config's listen.admin this time (the test's port is ephemeral,
    // so point the config at it).
    let text = std::fs::read_to_string(&config).unwrap();
    let text = text.replace(
        "admin = \"127.0.0.1:0\"",
        &format!("admin = \"{}\"", sidecar.admin_addr()),
    );
    let pinned = config.with_file_name("pinned.toml");
    std::fs::write(&pinned, text).unwrap();
    let (code, screen) = run_binary(
        Command::new(BIN)
            .arg("status")
            .arg("--config")
            .arg(&pinned)
            .env("TEST_FINCODE_API_TOKEN", &token),
    );
    assert_eq!(code, Some(0), "{screen}");
    let requests = line(&screen, "requests");
    assert!(
        requests.starts_with("RED  requests     20  success 90.0 %  4xx 0.0 %  5xx 10.0 %"),
        "{screen}"
    );
    assert!(
        screen.ends_with("overall: action needed (RED)\n"),
        "{screen}"
    );

    // --watch: frames until stopped, the second with the last interval's rates.
    let mut watch = Command::new(BIN)
        .args(["status", "--admin", &admin, "--watch", "0.3"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Deliberate: the first frame's interval passes before the traffic (real time, a binary).
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..5 {
        get(&client, &sidecar.url("/transactionmanagement/transactions")).await;
    }
    // Deliberate: a few 0.3 s --watch intervals of real time pass in the binary.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    watch.kill().unwrap();
    watch.wait().unwrap();
    let mut frames = String::new();
    watch
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut frames)
        .unwrap();
    let count = frames.matches("fincode-sidecar status  ").count();
    assert!(count >= 2, "{count} frame(s):\n{frames}");
    assert!(frames.contains("(since the sidecar started)"), "{frames}");
    assert!(frames.contains("(last 0."), "{frames}");
    // The 5 calls made while watching show up in the intervals' counts (however the
    // frames split them), not as the total.
    let in_intervals: u64 = frames
        .split("fincode-sidecar status  ")
        .filter(|frame| frame.contains("(last "))
        .map(|frame| {
            let count = line(frame, "requests")[5..]
                .trim_start_matches("requests")
                .split_whitespace()
                .next()
                .unwrap()
                .to_owned();
            count.parse::<u64>().unwrap()
        })
        .sum();
    assert_eq!(in_intervals, 5, "{frames}");
}

const EMAIL: &str = "ops-status-5d2a@merchant.test";
const PASSWORD: &str = "CANARY-pw-status-81e3";

/// A metric's value in `/metrics` as Unix seconds, 0 when absent.
fn unix_seconds(metrics: &str, name: &str) -> u64 {
    let value = support::metric_value(metrics, name);
    assert!(value >= 0.0 && value.fract() == 0.0, "{name} {value}");
    value as u64
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A login-mode sidecar that retries a failed login quickly (200 ms, at most 1 s apart).
async fn login_sidecar(sandbox: &TestSandbox) -> Sidecar {
    SidecarBuilder::new(sandbox)
        .login(sandbox, EMAIL, PASSWORD)
        .set("auth.login_backoff_initial", "200ms")
        .set("auth.login_backoff_max", "1s")
        .start_ready()
        .await
}

/// The token line in login mode: when the token FinCode issued expires (the sandbox
/// issues them for 47.5 min) and when the sidecar renews it; red once the renewal fails
/// with the token about to lapse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_line_counts_down_to_expiry_and_turns_red_when_renewal_fails_at_the_end() {
    let sandbox = TestSandbox::with_user(EMAIL, PASSWORD, |config| {
        config.token_lifetime = Duration::from_secs(47 * 60 + 30);
    })
    .await;
    let before = now_unix();
    let sidecar = login_sidecar(&sandbox).await;
    let after = now_unix();
    let admin = sidecar.admin_url("");

    // The gauges: the JWT's `exp`, and 5 minutes (auth.refresh_before) ahead of it.
    let metrics = sidecar.scrape().await;
    let expires = unix_seconds(&metrics, "fincode_token_expiry_timestamp_seconds");
    let renews = unix_seconds(&metrics, "fincode_token_refresh_timestamp_seconds");
    assert!(
        (before + 2850 - 1..=after + 2850 + 1).contains(&expires),
        "{expires} not 47.5 min after {before}..{after}"
    );
    assert!(
        expires - renews >= 299 && expires - renews <= 301,
        "{metrics}"
    );

    let (code, screen) = status(&["--admin", &admin]);
    assert_eq!(code, Some(0), "{screen}");
    let token = line(&screen, "token");
    let renews_at =
        humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(renews));
    assert!(
        token.starts_with(&format!(
            "OK   token        valid, expires in 47m (renews at {renews_at}); logins 1 ok 0 failed"
        )),
        "{screen}"
    );
    assert!(!screen.contains(PASSWORD), "{screen}");

    // A second sidecar, whose tokens live 20 s: renewed 10 s in (half their life), when
    // FinCode's auth endpoints are down. The renewal fails with seconds to go: red.
    drop(sidecar);
    let settings = hyper::Request::put(format!("{}/settings", sandbox.admin_url()))
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            br#"{"token_lifetime_secs": 20}"#,
        )))
        .unwrap();
    assert_eq!(send(&app_client(), settings).await.status, 200);
    let sidecar = login_sidecar(&sandbox).await;
    let admin = sidecar.admin_url("");
    let (code, screen) = status(&["--admin", &admin]);
    assert_eq!(code, Some(0), "{screen}");
    assert!(
        line(&screen, "token").starts_with("OK   token        valid, expires in 1"),
        "{screen}"
    );
    sandbox.add_fault(FaultRule::status(503).path_prefix("/securitymanagement"));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let failing = loop {
        let (code, screen) = status(&["--admin", &admin]);
        assert_eq!(code, Some(0), "{screen}");
        let token = line(&screen, "token").to_owned();
        if token.contains("renewal failing") {
            break token;
        }
        assert!(std::time::Instant::now() < deadline, "{screen}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert!(failing.starts_with("RED  token        "), "{failing}");
    // Still valid for a few seconds, or just expired, depending on when we looked.
    assert!(
        failing.contains("valid, expires in ") || failing.contains("EXPIRED "),
        "{failing}"
    );
    assert!(
        failing.contains("HTTP 503"),
        "readiness's reason: {failing}"
    );
    assert!(!failing.contains(PASSWORD), "{failing}");
}

#[test]
fn an_unreachable_admin_port_exits_1_and_bad_usage_2() {
    // A port nothing listens on: bind one, note it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (code, text) = status(&["--admin", &format!("http://127.0.0.1:{port}")]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("admin port is unreachable"), "{text}");
    let (code, text) = status(&["--admin", "127.0.0.1:9090"]);
    assert_eq!(code, Some(2), "{text}");
    let (code, text) = status(&["--admin", "http://127.0.0.1:9090", "--watch", "0"]);
    assert_eq!(code, Some(2), "{text}");
}
