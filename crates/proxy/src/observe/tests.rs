//! The access line written by hand against the one `tracing` writes, for the same
//! request under the same JSON subscriber.

use std::{
    io::Write,
    sync::{Arc, Mutex},
    time::Duration,
};

use fincode_redact::Redactor;
use fincode_telemetry::{AccessLog, Metrics, Traces};
use http::{HeaderMap, HeaderValue, Request, Response};
use prometheus_client::metrics::counter::Counter;
use tower::{Layer, Service, ServiceExt};

use super::ObserveLayer;
use crate::{
    ErrorKind,
    correlation::{Correlated, RequestId, TraceContext},
    routes::RouteTable,
};

/// Collects what is written to it.
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Sink {
    fn lines(&self) -> Vec<String> {
        String::from_utf8(self.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

/// What the app sends and what the stack below telemetry answers.
struct Case {
    headers: Vec<(&'static str, &'static str)>,
    path: &'static str,
    request_bytes: Option<&'static str>,
    response_bytes: Option<&'static str>,
    error: Option<ErrorKind>,
    sampled: bool,
}

impl Default for Case {
    fn default() -> Self {
        Self {
            headers: vec![("x-request-id", "order-77-attempt-1")],
            path: "/v1/payments",
            request_bytes: Some("12"),
            response_bytes: Some("345"),
            error: None,
            sampled: true,
        }
    }
}

/// The access lines logged at `level` for `case`, by `tracing` or (`by_hand`) by an
/// [`AccessLog`] of its own.
fn access_lines(case: &Case, level: &str, by_hand: bool) -> Vec<String> {
    let (id, trace) = ids(case);
    access_lines_with(case, level, by_hand, &id, trace)
}

/// The ids the correlation layer would assign to `case`'s request.
fn ids(case: &Case) -> (RequestId, TraceContext) {
    let mut headers = HeaderMap::new();
    for (name, value) in &case.headers {
        headers.append(*name, HeaderValue::from_static(value));
    }
    let ratio = if case.sampled { 1.0 } else { 0.0 };
    (
        RequestId::from_headers(&headers),
        TraceContext::from_headers(&HeaderMap::new(), ratio),
    )
}

/// [`access_lines`] for a request with this `id` and `trace` already assigned.
fn access_lines_with(
    case: &Case,
    level: &str,
    by_hand: bool,
    id: &RequestId,
    trace: TraceContext,
) -> Vec<String> {
    let tracing_out = Sink::default();
    let hand_out = Sink::default();
    let log = by_hand.then(|| AccessLog::spawn(hand_out.clone(), 16, Counter::default()).unwrap());
    let layer = ObserveLayer::new(
        Metrics::new().http,
        RouteTable::new("/"),
        Traces::default(),
        Redactor::builder().build(),
    )
    .with_access_log(log.clone());
    let error = case.error;
    let response_bytes = case.response_bytes;
    let inner = tower::service_fn(move |_req: Request<()>| async move {
        let mut response = Response::new(());
        if let Some(bytes) = response_bytes {
            response.headers_mut().insert(
                http::header::CONTENT_LENGTH,
                HeaderValue::from_static(bytes),
            );
        }
        if let Some(kind) = error {
            *response.status_mut() = http::StatusCode::GATEWAY_TIMEOUT;
            response.extensions_mut().insert(kind);
        }
        Ok::<_, std::convert::Infallible>(response)
    });
    let mut service = layer.layer(inner);
    let mut request = Request::post(case.path).body(()).unwrap();
    for (name, value) in &case.headers {
        request
            .headers_mut()
            .append(*name, HeaderValue::from_static(value));
    }
    if let Some(bytes) = case.request_bytes {
        request.headers_mut().insert(
            http::header::CONTENT_LENGTH,
            HeaderValue::from_static(bytes),
        );
    }
    request.extensions_mut().insert(Correlated {
        id: id.clone(),
        trace,
    });

    let subscriber = fincode_telemetry::json_subscriber(level, {
        let out = tracing_out.clone();
        move || out.clone()
    })
    .finish();
    tracing::subscriber::with_default(subscriber, || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            let response = service.ready().await.unwrap().call(request).await.unwrap();
            drop(response);
        });
    });
    if let Some(log) = log {
        log.stop(Duration::from_secs(5));
    }
    let access = |sink: &Sink| -> Vec<String> {
        let mut lines = sink.lines();
        lines.retain(|line| line.contains("fincode_sidecar::access"));
        lines
    };
    let (by_tracing, written) = (access(&tracing_out), access(&hand_out));
    if by_hand {
        // Written by hand only: no `tracing` event besides.
        assert_eq!(by_tracing, Vec::<String>::new());
        written
    } else {
        by_tracing
    }
}

/// `line` with the two members that differ between any two requests (the time and the
/// latency) replaced by placeholders, after checking their form.
fn normalised(line: &str) -> String {
    let rest = line
        .strip_prefix("{\"timestamp\":\"")
        .unwrap_or_else(|| panic!("no leading timestamp: {line}"));
    let (stamp, rest) = rest.split_at(27);
    assert!(
        stamp.len() == 27 && stamp.as_bytes()[10] == b'T' && stamp.ends_with('Z'),
        "{stamp}"
    );
    let (head, tail) = rest.split_once("\"latency_ms\":").unwrap();
    let (latency, tail) = tail.split_once(',').unwrap();
    let latency: f64 = latency.parse().unwrap_or_else(|_| panic!("{latency}"));
    assert!(latency >= 0.0);
    format!("{{\"timestamp\":\"T{head}\"latency_ms\":0,{tail}")
}

/// Both ways give the same line: same members, same order, same types, same values.
fn assert_same_line(case: &Case, level: &str) -> serde_json::Value {
    let (id, trace) = ids(case);
    let old = access_lines_with(case, level, false, &id, trace);
    let new = access_lines_with(case, level, true, &id, trace);
    assert_eq!(old.len(), 1, "{old:?}");
    assert_eq!(new.len(), 1, "{new:?}");
    let (old, new) = (&old[0], &new[0]);
    let parsed_old: serde_json::Value = serde_json::from_str(old).unwrap();
    let parsed_new: serde_json::Value = serde_json::from_str(new).unwrap();
    let (old_map, new_map) = (
        parsed_old.as_object().unwrap(),
        parsed_new.as_object().unwrap(),
    );
    assert_eq!(
        old_map.keys().collect::<Vec<_>>(),
        new_map.keys().collect::<Vec<_>>()
    );
    for (key, value) in old_map {
        match key.as_str() {
            "timestamp" => assert!(new_map[key].is_string()),
            "latency_ms" => assert!(new_map[key].is_f64(), "{new}"),
            _ => assert_eq!(&new_map[key], value, "member {key}: {old} vs {new}"),
        }
    }
    assert_eq!(normalised(new), normalised(old), "byte for byte");
    parsed_new
}

#[test]
fn the_access_line_written_by_hand_is_tracings_line() {
    let line = assert_same_line(&Case::default(), "info");
    assert_eq!(line["message"], "access");
    assert_eq!(line["level"], "INFO");
    assert_eq!(line["status"], 200);
    assert_eq!(line["request_bytes"], 12);
    assert_eq!(line["response_bytes"], 345);
    assert_eq!(line["spans"][0]["correlation_id"], "order-77-attempt-1");
    assert_eq!(line["spans"][0]["trace_id"].as_str().unwrap().len(), 32);
    // The span's members as the ids recorded after creation gave them (before issue 14).
    let raw = &access_lines(&Case::default(), "info", true)[0];
    assert!(
        raw.contains(
            r#""target":"fincode_sidecar::access","spans":[{"correlation_id":"order-77-attempt-1","method":"POST","route":"other","trace_id":""#
        ),
        "{raw}"
    );
}

#[test]
fn absent_sizes_an_error_and_an_unsampled_trace_are_written_alike() {
    let case = Case {
        request_bytes: None,
        response_bytes: None,
        error: Some(ErrorKind::UpstreamTimeout),
        sampled: false,
        ..Case::default()
    };
    let line = assert_same_line(&case, "info");
    assert_eq!(line["upstream_status"], 0);
    assert_eq!(line["error"], "upstream_timeout");
    assert!(line.get("request_bytes").is_none());
}

#[test]
fn without_the_request_span_there_is_no_span_list() {
    // The access target on, the proxy's request span off: `tracing` writes no `spans`.
    let line = assert_same_line(&Case::default(), "warn,fincode_sidecar::access=info");
    assert!(line.get("spans").is_none(), "{line}");
}

#[test]
fn the_live_filter_decides_per_line() {
    assert!(access_lines(&Case::default(), "warn", true).is_empty());
    assert!(access_lines(&Case::default(), "info,fincode_sidecar::access=off", true).is_empty());
    assert_eq!(access_lines(&Case::default(), "info", true).len(), 1);
}

#[test]
fn hostile_and_card_like_ids_are_logged_as_tracing_logs_them() {
    for id in [
        // Control characters, quotes and backslashes: not a valid id, so replaced by a
        // minted one, never written.
        "a\"b\\c",
        "a b;<x>",
        // A card number or an email is a well-formed id, and the app's free text: both
        // lines carry it through the redactor, never in clear.
        "4539571234561486",
        "order-4539571234561486",
        "jane.doe@example.com",
    ] {
        let Ok(value) = HeaderValue::from_str(id) else {
            continue;
        };
        let value: &'static str =
            Box::leak(value.to_str().unwrap_or("x").to_owned().into_boxed_str());
        let case = Case {
            headers: vec![("x-request-id", value)],
            ..Case::default()
        };
        let line = assert_same_line(&case, "info");
        let logged = line["spans"][0]["correlation_id"].as_str().unwrap();
        assert_ne!(logged, id);
        assert!(
            !logged.contains("4539571234561486") && !logged.contains("jane.doe"),
            "{logged}"
        );
    }
}

#[test]
fn values_needing_escapes_are_escaped() {
    // The only free text in a line is the correlation id, which is validated upstream;
    // the writer still escapes whatever it is handed, as `tracing` does.
    let mut out = String::new();
    let line = super::AccessLine {
        status: 200,
        upstream_status: 200,
        latency_ms: 1.5,
        attempts: 1,
        request_bytes: None,
        response_bytes: None,
        error: "a\"b\\c\n\u{1}\u{1f}",
    };
    out.push_str("{\"timestamp\":\"x\",");
    line.write_json(None, &mut out);
    let parsed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(parsed["error"], "a\"b\\c\n\u{1}\u{1f}");
    assert!(!out.contains('\n') && !out.contains('\u{1}'), "{out}");
}
