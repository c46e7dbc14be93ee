#![allow(clippy::unwrap_used, clippy::float_cmp)]

use super::*;

const TEXT: &str = r#"# HELP http_server_request_duration_seconds Duration of the app's requests.
# TYPE http_server_request_duration_seconds histogram
http_server_request_duration_seconds_sum{method="GET",route="/a",status_class="2xx"} 1.5
http_server_request_duration_seconds_count{method="GET",route="/a",status_class="2xx"} 8
http_server_request_duration_seconds_bucket{le="0.1",method="GET",route="/a",status_class="2xx"} 4
http_server_request_duration_seconds_bucket{le="1.0",method="GET",route="/a",status_class="2xx"} 8
http_server_request_duration_seconds_bucket{le="+Inf",method="GET",route="/a",status_class="2xx"} 8
http_server_request_duration_seconds_count{method="POST",route="/b",status_class="5xx"} 2
http_server_request_duration_seconds_bucket{le="0.1",method="POST",route="/b",status_class="5xx"} 0
http_server_request_duration_seconds_bucket{le="1.0",method="POST",route="/b",status_class="5xx"} 0
http_server_request_duration_seconds_bucket{le="+Inf",method="POST",route="/b",status_class="5xx"} 2
fincode_circuit_breaker_state{upstream="acme.fincode.tech"} 2
fincode_retries_total{reason="status_503"} 3
fincode_retries_total{reason="connect"} 1 1700000000000
fincode_odd{note="a \"quoted\" \\ value, with {braces}"} 7
fincode_audit_queue_depth 0
not a sample line at all
broken{le="1" 3
# EOF
"#;

#[test]
fn samples_with_labels_escapes_and_timestamps_are_read_and_junk_is_skipped() {
    let exposition = Exposition::parse(TEXT);
    assert_eq!(exposition.samples.len(), 14, "{:#?}", exposition.samples);
    assert_eq!(exposition.sum("fincode_retries_total", &[]), 4.0);
    assert_eq!(
        exposition.sum("fincode_retries_total", &[("reason", "connect")]),
        1.0
    );
    let odd = exposition
        .samples
        .iter()
        .find(|s| s.name == "fincode_odd")
        .unwrap();
    assert_eq!(
        odd.label("note"),
        Some(r#"a "quoted" \ value, with {braces}"#)
    );
    assert_eq!(odd.value, 7.0);
    assert_eq!(exposition.max("fincode_circuit_breaker_state"), Some(2.0));
    assert_eq!(exposition.max("fincode_absent"), None);
    // No sample: a positive zero (an empty f64 sum would print as -0).
    assert!(exposition.sum("fincode_absent", &[]).is_sign_positive());
    assert!(exposition.has("fincode_audit_queue_depth"));
    assert!(!exposition.has("fincode_webhook_queue_depth"));
    assert_eq!(
        exposition.by_label("http_server_request_duration_seconds_count", "status_class"),
        vec![("2xx".to_owned(), 8.0), ("5xx".to_owned(), 2.0)]
    );
}

#[test]
fn buckets_are_summed_over_every_series_by_bound() {
    let exposition = Exposition::parse(TEXT);
    assert_eq!(
        exposition.buckets("http_server_request_duration_seconds"),
        vec![(0.1, 4.0), (1.0, 8.0), (f64::INFINITY, 10.0)]
    );
}

#[test]
fn quantiles_interpolate_inside_the_bucket_as_promql_does() {
    // 100 observations: 50 up to 0.1 s, 40 more up to 0.5 s, 9 more up to 2.5 s, 1 above.
    let buckets = [
        (0.1, 50.0),
        (0.5, 90.0),
        (2.5, 99.0),
        (f64::INFINITY, 100.0),
    ];
    // p50: rank 50, the end of the first bucket.
    assert!((quantile(0.5, &buckets).unwrap() - 0.1).abs() < 1e-9);
    // p75: rank 75, 25 of the 40 in (0.1, 0.5].
    assert!((quantile(0.75, &buckets).unwrap() - 0.35).abs() < 1e-9);
    // p99: rank 99, the end of the third bucket.
    assert!((quantile(0.99, &buckets).unwrap() - 2.5).abs() < 1e-9);
    // p99.9 falls in +Inf: the highest finite bound.
    assert_eq!(quantile(0.999, &buckets), Some(2.5));
    // p10: rank 10, inside the first bucket from 0.
    assert!((quantile(0.1, &buckets).unwrap() - 0.02).abs() < 1e-9);
    // Nothing observed: no quantile.
    assert_eq!(quantile(0.5, &[(0.1, 0.0), (f64::INFINITY, 0.0)]), None);
    assert_eq!(quantile(0.5, &[]), None);
    // Empty buckets before the one holding the rank are skipped.
    let sparse = [(0.1, 0.0), (1.0, 0.0), (5.0, 4.0), (f64::INFINITY, 4.0)];
    assert!((quantile(0.5, &sparse).unwrap() - 3.0).abs() < 1e-9);
}

#[test]
fn deltas_between_two_scrapes_survive_a_restart() {
    assert_eq!(counter_delta(15.0, 10.0), 5.0);
    // The sidecar restarted between the scrapes: it counted 3 since.
    assert_eq!(counter_delta(3.0, 10.0), 3.0);
    let earlier = [(0.1, 4.0), (1.0, 8.0), (f64::INFINITY, 10.0)];
    let later = [(0.1, 4.0), (1.0, 9.0), (5.0, 1.0), (f64::INFINITY, 14.0)];
    assert_eq!(
        bucket_delta(&later, &earlier),
        vec![(0.1, 0.0), (1.0, 1.0), (5.0, 1.0), (f64::INFINITY, 4.0)]
    );
}
