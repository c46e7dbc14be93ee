//! The client layers over a stand-in client that records what it was sent.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};

use http::{HeaderMap, HeaderValue, Request, Response, Version, header};
use tower::{Service, ServiceExt, service_fn};

use super::client;
use crate::{
    ErrorKind, SidecarError,
    correlation::{Correlated, RequestId, TRACEPARENT, TraceContext},
    observe::{Counted, Tries},
    routes::OTHER,
    upstream::{Spans, Target},
};

/// What the stand-in client saw of each request.
#[derive(Debug)]
struct Sent {
    uri: String,
    version: Version,
    headers: HeaderMap,
}

/// Every request the stand-in client was sent, in order.
type SentLog = Arc<Mutex<Vec<Sent>>>;

/// The layers over a client that answers with `answer`'s headers; what it was sent.
fn layered(
    answer: HeaderMap,
) -> (
    impl Service<Request<()>, Response = Response<()>, Error = SidecarError>,
    SentLog,
) {
    let sent = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&sent);
    let inner = service_fn(move |req: Request<()>| {
        seen.lock().unwrap().push(Sent {
            uri: req.uri().to_string(),
            version: req.version(),
            headers: req.headers().clone(),
        });
        let mut response = Response::new(());
        *response.headers_mut() = answer.clone();
        async move { Ok::<_, SidecarError>(response) }
    });
    let target =
        Target::new(&"https://acme.fincode.tech/api/v6/services".parse().unwrap()).unwrap();
    (client(target, Spans::default()).service(inner), sent)
}

fn request(path: &str, trace: TraceContext, tries: &Tries) -> Request<()> {
    let mut req = Request::get(path)
        .version(Version::HTTP_2)
        .header(header::HOST, "127.0.0.1:8080")
        .header(header::TE, "trailers")
        .header("keep-alive", "timeout=5")
        .body(())
        .unwrap();
    req.extensions_mut().insert(Correlated {
        id: RequestId::mint(),
        trace,
    });
    req.extensions_mut().insert(Counted {
        route: OTHER,
        tries: tries.clone(),
    });
    req
}

#[tokio::test]
async fn each_try_is_rewritten_cleaned_and_gets_its_own_traceparent() {
    let (mut service, sent) = layered(HeaderMap::new());
    let trace = TraceContext::from_headers(&HeaderMap::new(), 1.0);
    let tries = Tries::default();
    for _ in 0..2 {
        service
            .ready()
            .await
            .unwrap()
            .call(request("/payments?pay_type=Card", trace, &tries))
            .await
            .unwrap();
    }
    assert_eq!(tries.count(), 2, "each try counts");
    let sent = sent.lock().unwrap();
    for try_ in sent.iter() {
        assert_eq!(
            try_.uri,
            "https://acme.fincode.tech/api/v6/services/payments?pay_type=Card"
        );
        assert_eq!(try_.version, Version::HTTP_11);
        for gone in [header::HOST.as_str(), "te", "keep-alive"] {
            assert!(
                !try_.headers.contains_key(gone),
                "{gone}: {:?}",
                try_.headers
            );
        }
        let traceparent = try_.headers[&TRACEPARENT].to_str().unwrap();
        assert!(
            traceparent.contains(&trace.trace_id_hex()),
            "the request's trace: {traceparent}"
        );
    }
    assert_ne!(
        sent[0].headers[&TRACEPARENT], sent[1].headers[&TRACEPARENT],
        "a span of its own per try"
    );
}

#[tokio::test]
async fn an_ambiguous_path_is_refused_before_it_is_a_try() {
    let (service, sent) = layered(HeaderMap::new());
    let tries = Tries::default();
    let trace = TraceContext::from_headers(&HeaderMap::new(), 1.0);
    let error = service
        .oneshot(request("/a/../admin", trace, &tries))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::BadPath);
    assert!(sent.lock().unwrap().is_empty());
    assert_eq!(tries.count(), 0);
}

#[tokio::test]
async fn fincodes_hop_by_hop_headers_stay_behind_and_its_cookies_are_sensitive() {
    let mut answer = HeaderMap::new();
    answer.insert(header::CONNECTION, HeaderValue::from_static("close"));
    answer.insert("keep-alive", HeaderValue::from_static("timeout=5"));
    answer.insert(header::SET_COOKIE, HeaderValue::from_static("a=b"));
    answer.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let (service, _) = layered(answer);
    let trace = TraceContext::from_headers(&HeaderMap::new(), 1.0);
    let response = service
        .oneshot(request("/payments", trace, &Tries::default()))
        .await
        .unwrap();
    let headers = response.headers();
    assert!(!headers.contains_key(header::CONNECTION));
    assert!(!headers.contains_key("keep-alive"));
    assert!(headers[header::SET_COOKIE].is_sensitive());
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
}

/// A try dropped before FinCode answered (the retry layer's per-try bound ran out) still
/// has its duration observed, as no answer; one that got an answer is observed once.
#[tokio::test]
async fn a_try_dropped_unanswered_is_observed_as_no_answer() {
    let metrics = fincode_telemetry::Metrics::new();
    let spans = Spans {
        metrics: Some(metrics.http.clone()),
        ..Spans::default()
    };
    let target =
        Target::new(&"https://acme.fincode.tech/api/v6/services".parse().unwrap()).unwrap();
    // Answers a ping at once; anything else never.
    let inner = service_fn(|req: Request<()>| async move {
        if req.uri().path().ends_with("/ping") {
            Ok::<_, SidecarError>(Response::new(()))
        } else {
            std::future::pending().await
        }
    });
    let mut service = client(target, spans).service(inner);
    let trace = TraceContext::from_headers(&HeaderMap::new(), 1.0);
    let tries = Tries::default();
    let stalled = service
        .ready()
        .await
        .unwrap()
        .call(request("/payments", trace, &tries));
    let ended = tokio::time::timeout(std::time::Duration::from_millis(20), stalled).await;
    assert!(ended.is_err(), "FinCode never answers this one");
    service
        .ready()
        .await
        .unwrap()
        .call(request("/ping", trace, &tries))
        .await
        .unwrap();

    let text = metrics.render();
    let count = |class: &str| {
        let prefix = format!(
            r#"http_client_request_duration_seconds_count{{method="GET",route="other",status_class="{class}"}} "#
        );
        text.lines()
            .find_map(|line| line.strip_prefix(prefix.as_str()))
            .map(str::to_owned)
    };
    assert_eq!(count("error").as_deref(), Some("1"), "{text}");
    assert_eq!(count("2xx").as_deref(), Some("1"), "{text}");
}
