#![allow(
    clippy::unwrap_used,
    clippy::float_cmp,
    clippy::format_push_string,
    clippy::format_collect
)]

use super::*;

/// An exposition with `ok` 2xx and `failed` 5xx requests, all of them observed in the
/// bucket up to `slow` seconds (the buckets the sidecar uses, abridged).
fn scrape(ok: u64, failed: u64, slow: f64, dead: u64) -> Scrape {
    let mut text = String::new();
    for (class, n) in [("2xx", ok), ("5xx", failed)] {
        text.push_str(&format!(
            "http_server_request_duration_seconds_count{{method=\"GET\",route=\"/a\",status_class=\"{class}\"}} {n}\n"
        ));
        for bound in [0.1, 1.0, 2.5, 5.0, 10.0] {
            let below = if bound >= slow { n } else { 0 };
            text.push_str(&format!(
                "http_server_request_duration_seconds_bucket{{le=\"{bound}\",method=\"GET\",route=\"/a\",status_class=\"{class}\"}} {below}\n"
            ));
        }
        text.push_str(&format!(
            "http_server_request_duration_seconds_bucket{{le=\"+Inf\",method=\"GET\",route=\"/a\",status_class=\"{class}\"}} {n}\n"
        ));
    }
    text.push_str(&format!(
        "fincode_circuit_breaker_state{{upstream=\"x\"}} 0\n\
         fincode_retries_total{{reason=\"status_503\"}} {failed}\n\
         fincode_webhook_queue_depth 0\n\
         fincode_webhook_store_healthy 1\n\
         fincode_webhook_deliveries_total{{result=\"delivered\"}} 5\n\
         fincode_webhook_deliveries_total{{result=\"dead\"}} {dead}\n\
         fincode_audit_available 1\n\
         fincode_audit_records_written_total 10\n"
    ));
    Scrape {
        metrics: Exposition::parse(&text),
        ready: Some((200, "ready\n".to_owned())),
    }
}

fn line<'a>(screen: &'a str, topic: &str) -> &'a str {
    screen
        .lines()
        .find(|l| l.get(5..).is_some_and(|rest| rest.starts_with(topic)))
        .unwrap_or_else(|| panic!("no {topic} line in:\n{screen}"))
}

#[test]
fn totals_since_start_and_rates_over_the_last_interval() {
    let earlier = scrape(90, 10, 0.1, 0);
    let later = scrape(190, 10, 0.1, 0);
    // Since start: 200 requests, 10 of them 5xx = 5 %, not above the threshold.
    let once = render("http://a", &later, None, Duration::ZERO, false);
    let requests = line(&once, "requests");
    assert!(requests.starts_with("OK"), "{once}");
    assert!(requests.contains(" 200  success 95.0 %"), "{once}");
    assert!(requests.contains("5xx 5.0 %"), "{once}");
    assert!(once.contains("(since the sidecar started)"), "{once}");

    // Over the 2 s between the scrapes: 100 requests, all 2xx, 50/s.
    let watched = render(
        "http://a",
        &later,
        Some(&earlier),
        Duration::from_secs(2),
        false,
    );
    let requests = line(&watched, "requests");
    assert!(
        requests.contains("100 (50.0/s)  success 100.0 %"),
        "{watched}"
    );
    assert!(requests.contains("5xx 0.0 %"), "{watched}");
    assert!(watched.contains("(last 2.0 s)"), "{watched}");
    // No retry in the interval.
    assert!(line(&watched, "retries").contains("0 (0.0/s)"), "{watched}");
}

#[test]
fn past_the_launch_day_thresholds_lines_are_red() {
    // 10 % 5xx, every request slower than 2.5 s (p99 between 2.5 and 5 s), a dead letter.
    let bad = scrape(90, 10, 5.0, 1);
    let screen = render("http://a", &bad, None, Duration::ZERO, false);
    assert!(line(&screen, "requests").starts_with("RED"), "{screen}");
    let latency = line(&screen, "latency");
    assert!(latency.starts_with("RED"), "{screen}");
    // p50 of 100 observations in (2.5, 5]: 2.5 + 2.5 * 0.5.
    assert!(latency.contains("p50 3.75 s"), "{screen}");
    assert!(line(&screen, "webhooks").starts_with("RED"), "{screen}");
    assert!(
        line(&screen, "webhooks").contains("dead letters 1"),
        "{screen}"
    );
    assert!(
        screen.ends_with("overall: action needed (RED)\n"),
        "{screen}"
    );

    // The same in the next interval, with no new dead letter and fast requests: clear.
    let next = scrape(190, 10, 5.0, 1);
    let mut fast = next.clone();
    fast.metrics = Exposition::parse(
        &bad.metrics
            .samples
            .iter()
            .map(|s| {
                let labels: Vec<String> = s
                    .labels
                    .iter()
                    .map(|(k, v)| format!("{k}=\"{v}\""))
                    .collect();
                // 100 more 2xx, all within 0.1 s.
                let extra = match (s.name.as_str(), s.label("status_class")) {
                    (
                        "http_server_request_duration_seconds_count"
                        | "http_server_request_duration_seconds_bucket",
                        Some("2xx"),
                    ) => 100.0,
                    _ => 0.0,
                };
                format!("{}{{{}}} {}\n", s.name, labels.join(","), s.value + extra)
            })
            .collect::<String>(),
    );
    let screen = render("http://a", &fast, Some(&bad), Duration::from_secs(1), false);
    assert!(line(&screen, "requests").starts_with("OK"), "{screen}");
    let latency = line(&screen, "latency");
    assert!(latency.starts_with("OK"), "{screen}");
    assert!(latency.contains("p99 99 ms"), "{screen}");
    assert!(line(&screen, "webhooks").starts_with("OK"), "{screen}");
}

#[test]
fn an_open_breaker_and_a_failing_readiness_are_red_and_features_off_say_so() {
    let scrape = Scrape {
        metrics: Exposition::parse("fincode_circuit_breaker_state{upstream=\"x\"} 2\n"),
        ready: Some((
            503,
            "not ready: no FinCode token yet: rejected\n".to_owned(),
        )),
    };
    let screen = render("http://a", &scrape, None, Duration::ZERO, false);
    assert!(line(&screen, "breaker").starts_with("RED"), "{screen}");
    assert!(line(&screen, "breaker").contains("open"), "{screen}");
    assert!(
        line(&screen, "readiness").starts_with("RED  readiness    503 not ready"),
        "{screen}"
    );
    assert!(line(&screen, "webhooks").ends_with("off"), "{screen}");
    assert!(line(&screen, "audit").ends_with("off"), "{screen}");
    assert!(
        line(&screen, "latency").contains("p50 -  p99 -"),
        "{screen}"
    );
}

#[test]
fn the_token_line_counts_down_to_expiry_and_is_red_when_it_lapses() {
    let at = UNIX_EPOCH + Duration::from_hours(500_000); // 1_800_000_000 s
    let schedule = |expires: u64, renews: u64| {
        Exposition::parse(&format!(
            "fincode_token_expiry_timestamp_seconds {expires}\n\
             fincode_token_refresh_timestamp_seconds {renews}\n"
        ))
    };
    // 47 minutes left, renewed 5 minutes before expiry.
    let fresh = schedule(1_800_002_820, 1_800_002_520);
    let (mark, text) = token_validity(&fresh, &[], at);
    assert_eq!(mark, Mark::Ok);
    assert_eq!(
        text,
        "valid, expires in 47m (renews at 2027-01-15T08:42:00Z)"
    );

    // 90 s left and the renewal failing: red, with readiness's reason.
    let failing = ["auth: token still valid, renewal failing: FinCode's login answered HTTP 502"];
    let close = schedule(1_800_000_090, 1_800_000_030);
    let (mark, text) = token_validity(&close, &failing, at);
    assert_eq!(mark, Mark::Red, "{text}");
    assert!(
        text.starts_with("valid, expires in 90s (renewal failing; next try at 2027-01-15T08:00:30Z); auth: token still valid, renewal failing"),
        "{text}"
    );
    // The same 90 s with the renewal not (yet) failing is fine; so is a failing renewal
    // with an hour to go (that is a WARN, from the failure counters and readiness).
    assert_eq!(token_validity(&close, &[], at).0, Mark::Ok);
    assert_eq!(token_validity(&fresh, &failing, at).0, Mark::Ok);

    // Expired: red whatever else is said.
    let expired = schedule(1_799_999_000, 1_800_000_004);
    let (mark, text) = token_validity(&expired, &[], at);
    assert_eq!(mark, Mark::Red);
    assert!(text.starts_with("EXPIRED 16m ago"), "{text}");

    // Unknown (a static token; 0 or absent, or garbage): readiness decides.
    for unknown in [
        "",
        "fincode_token_expiry_timestamp_seconds 0\n",
        "fincode_token_expiry_timestamp_seconds 1e300\n",
    ] {
        let (mark, text) = token_validity(&Exposition::parse(unknown), &[], at);
        assert_eq!(mark, Mark::Ok);
        assert!(text.starts_with("valid (expiry not reported"), "{text}");
    }
}

#[test]
fn the_token_line_of_the_screen_is_red_when_the_token_has_expired() {
    let mut scrape = scrape(10, 0, 0.1, 0);
    scrape.metrics = Exposition::parse("fincode_token_expiry_timestamp_seconds 1000\n");
    let screen = render("http://a", &scrape, None, Duration::ZERO, false);
    assert!(
        line(&screen, "token").starts_with("RED  token        EXPIRED "),
        "{screen}"
    );
}
