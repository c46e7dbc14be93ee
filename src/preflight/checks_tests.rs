#![allow(clippy::unwrap_used)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fincode_redact::{Action, Redactor};

use super::*;

/// A "redactor" that writes everything down as it came: what the self-test must catch.
struct Verbatim;

impl Scrub for Verbatim {
    fn json(&self, body: &[u8]) -> String {
        String::from_utf8_lossy(body).into_owned()
    }
    fn header_value(&self, _name: &str, value: &str) -> String {
        value.to_owned()
    }
    fn url(&self, url: &str) -> String {
        url.to_owned()
    }
    fn text(&self, text: &str) -> String {
        text.to_owned()
    }
}

#[test]
fn the_built_in_redactor_lets_no_canary_through() {
    assert_eq!(redaction_leaks(&Redactor::builder().build()), Vec::new());
    // With a hash key, names and emails become pseudonyms: still no leak.
    let keyed = Redactor::builder()
        .hash_key(b"0123456789abcdef0123456789abcdef".to_vec().into())
        .build();
    assert_eq!(redaction_leaks(&keyed), Vec::new());
}

#[test]
fn a_redactor_that_writes_everything_down_leaks_every_canary() {
    let leaks = redaction_leaks(&Verbatim);
    for canary in CANARIES {
        assert!(
            leaks.iter().any(|leak| leak.field == canary.field),
            "{} not caught: {leaks:?}",
            canary.what
        );
    }
    for place in ["JSON body", "headers", "URL", "free text"] {
        assert!(leaks.iter().any(|leak| leak.place == place), "{place}");
    }
}

#[test]
fn a_masked_secret_is_a_leak_a_masked_card_number_is_not() {
    // `redact.fields = { currentPassword = "mask" }` keeps the password's last 4.
    let weak = Redactor::builder()
        .field("currentPassword", Action::MaskLast4)
        .build();
    let leaks = redaction_leaks(&weak);
    assert_eq!(
        leaks,
        vec![Leak {
            what: "password",
            field: "currentPassword",
            place: "JSON body"
        }]
    );
    // A card number masked to its last 4 (the built-in rule) is what PCI allows.
    let pan = Redactor::builder()
        .field("cardNumber", Action::MaskLast4)
        .build();
    assert_eq!(redaction_leaks(&pan), Vec::new());
}

fn probe(sent_ms: u64, received_ms: u64) -> Probe {
    Probe {
        status: http::StatusCode::OK,
        date: None,
        sent_at: UNIX_EPOCH + Duration::from_millis(sent_ms),
        received_at: UNIX_EPOCH + Duration::from_millis(received_ms),
    }
}

#[test]
fn skew_allows_for_the_date_resolution_and_the_round_trip() {
    let at = |secs: u64| UNIX_EPOCH + Duration::from_secs(secs);
    // Local clock 1000.2..1000.4; FinCode says 1000 (truncated): in sync.
    assert!(skew_secs(&probe(1_000_200, 1_000_400), at(1000)).abs() < f64::EPSILON);
    // FinCode an hour ahead.
    let ahead = skew_secs(&probe(1_000_200, 1_000_400), at(4600));
    assert!((3599.0..=3600.0).contains(&ahead), "{ahead}");
    // FinCode ten minutes behind.
    let behind = skew_secs(&probe(1_000_200, 1_000_400), at(400));
    assert!((-600.0..=-598.0).contains(&behind), "{behind}");
}

#[test]
fn the_skew_threshold_is_half_the_tightest_clock_margin() {
    let mut config =
        Config::with_base_url("https://acme.fincode.tech/api/v6/services".parse().unwrap());
    // Neither login nor timestamped webhooks: half of FinCode's 5 min.
    assert_eq!(skew_threshold(&config).0, Duration::from_secs(150));
    config.auth.mode = AuthMode::Login;
    config.auth.refresh_before = Duration::from_mins(4);
    assert_eq!(skew_threshold(&config).0, Duration::from_mins(2));
    config.webhooks.enabled = true;
    config.webhooks.scheme = WebhookScheme::StandardWebhooks;
    config.webhooks.tolerance = Duration::from_mins(1);
    let (threshold, why) = skew_threshold(&config);
    assert_eq!(threshold, Duration::from_secs(30));
    assert!(why.contains("webhooks.tolerance"), "{why}");
    config.webhooks.tolerance = Duration::from_secs(2);
    assert_eq!(skew_threshold(&config).0, Duration::from_secs(5));
}

#[test]
fn production_hosts_are_one_tenant_under_fincode_tech() {
    assert!(is_production_host("acme.fincode.tech"));
    assert!(is_production_host("acme-uk.fincode.tech"));
    assert!(!is_production_host("fincode.tech"));
    assert!(!is_production_host(".fincode.tech"));
    assert!(!is_production_host("acme.fincode.software"));
    assert!(!is_production_host("a.b.fincode.tech"));
    assert!(!is_production_host("acme.fincode.tech.evil.example"));
    assert!(!is_production_host("127.0.0.1"));
}

/// The item [`alerts_item`] makes of `rules` for `kind`, under a placeholder id and line.
fn alerts(rules: Option<&Rules>, kind: AlertKind) -> Item {
    alerts_item("x", "s", "l", rules, kind)
}

#[test]
fn the_shipped_alert_rules_have_the_checklists_three_alerts() {
    let path = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/prometheus/alerts.yaml"
    ));
    let rules = read_alerts(path).unwrap();
    assert_eq!(
        find_alert(&rules, AlertKind::ErrorRate),
        Some("FincodeSidecarHighErrorRate")
    );
    assert_eq!(
        find_alert(&rules, AlertKind::Latency),
        Some("FincodeSidecarHighLatencyP99")
    );
    assert_eq!(
        find_alert(&rules, AlertKind::WebhookFailures),
        Some("FincodeWebhookDeliveryFailing")
    );
    let all = alerts(Some(&Ok(rules)), AlertKind::Critical);
    assert_eq!(all.status, Status::Pass, "{}", all.reason);
}

#[test]
fn a_rules_file_without_an_alert_or_not_parsing_fails_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rules.yaml");
    std::fs::write(
        &path,
        "groups:\n  - name: g\n    rules:\n      - alert: Slow\n        expr: histogram_quantile(0.99, x_duration_bucket) > 30\n",
    )
    .unwrap();
    let rules = read_alerts(&path);
    let latency = alerts(Some(&rules), AlertKind::Latency);
    assert_eq!(latency.status, Status::Fail, "> 30 is not > 3");
    assert!(
        latency.reason.contains("latency > 3 s"),
        "{}",
        latency.reason
    );
    std::fs::write(&path, "groups: [unclosed\n").unwrap();
    let broken = alerts(Some(&read_alerts(&path)), AlertKind::ErrorRate);
    assert_eq!(broken.status, Status::Fail);
    assert!(
        broken.reason.contains("does not parse"),
        "{}",
        broken.reason
    );
    let none = alerts(None, AlertKind::ErrorRate);
    assert_eq!(none.status, Status::Manual);
    assert!(none.reason.contains("deploy/prometheus/alerts.yaml"));
}

#[test]
fn the_markdown_report_has_the_table_the_digest_and_the_todo_list() {
    let items = vec![
        item("a.one", "S", "First | item", Status::Pass, "fine"),
        item("a.two", "S", "Second", Status::Manual, "do it"),
        item("a.three", "S", "Third", Status::Fail, "broken; fix: x"),
    ];
    let meta = super::super::report::Meta {
        config_path: "c.toml".into(),
        config_digest: "ab".repeat(32),
        upstream: "https://acme.fincode.tech/api/v6/services".into(),
        production: false,
        generated_at: SystemTime::UNIX_EPOCH,
    };
    let md = super::super::report::markdown(&items, &meta);
    assert!(md.starts_with("# FinCode integration completion"), "{md}");
    assert!(md.contains("1970-01-01T00:00:00Z (UTC)"), "{md}");
    assert!(md.contains(&"ab".repeat(32)), "{md}");
    assert!(md.contains("| Section | Item | Status | Why |"), "{md}");
    assert!(md.contains("| S | First \\| item | pass | fine |"), "{md}");
    assert!(md.contains("- [ ] **Second** (S): do it"), "{md}");
    assert!(md.contains("1 pass, 1 fail, 1 manual"), "{md}");
    let json: serde_json::Value =
        serde_json::from_str(&super::super::report::json(&items)).unwrap();
    assert_eq!(json[2]["status"], "fail");
    assert_eq!(json[0]["id"], "a.one");
}
