//! An OTLP/HTTP trace receiver for tests: accepts `POST /v1/traces` with protobuf
//! bodies, keeps the raw bytes (for the secrets canary) and decodes the spans with the
//! opentelemetry-proto types.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    common::v1::{AnyValue, any_value},
    trace::v1::{Span, span::SpanKind},
};
use prost::Message as _;

/// The receiver; dropped with the test.
pub struct OtlpReceiver {
    pub addr: SocketAddr,
    bodies: Arc<Mutex<Vec<Bytes>>>,
    task: tokio::task::JoinHandle<()>,
}

/// One received span, flattened for assertions.
#[derive(Clone, Debug)]
pub struct ReceivedSpan {
    pub name: String,
    pub kind: SpanKind,
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    pub service_name: String,
    pub attributes: Vec<(String, String)>,
    pub error: bool,
}

impl ReceivedSpan {
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

impl OtlpReceiver {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let store = bodies.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let store = store.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let store = store.clone();
                        async move {
                            let path_ok = req.uri().path() == "/v1/traces";
                            let body = req.into_body().collect().await?.to_bytes();
                            let status = if path_ok {
                                store.lock().unwrap().push(body);
                                StatusCode::OK
                            } else {
                                StatusCode::NOT_FOUND
                            };
                            Ok::<_, hyper::Error>(
                                Response::builder()
                                    .status(status)
                                    .header("content-type", "application/x-protobuf")
                                    .body(Full::new(Bytes::new()))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, bodies, task }
    }

    /// `http://127.0.0.1:port/v1/traces`.
    pub fn endpoint(&self) -> String {
        format!("http://{}/v1/traces", self.addr)
    }

    /// Every export body as received, concatenated lossily (protobuf keeps strings raw,
    /// so a leaked secret appears here verbatim).
    pub fn raw(&self) -> String {
        self.bodies
            .lock()
            .unwrap()
            .iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        let bodies = self.bodies.lock().unwrap().clone();
        let mut out = Vec::new();
        for body in bodies {
            let request = ExportTraceServiceRequest::decode(body).expect("valid OTLP protobuf");
            for resource_spans in request.resource_spans {
                let service_name = resource_spans
                    .resource
                    .iter()
                    .flat_map(|r| r.attributes.iter())
                    .find(|kv| kv.key == "service.name")
                    .and_then(|kv| kv.value.as_ref())
                    .map(text)
                    .unwrap_or_default();
                for scope_spans in resource_spans.scope_spans {
                    for span in scope_spans.spans {
                        out.push(flatten(&span, &service_name));
                    }
                }
            }
        }
        out
    }

    /// Waits until `want` spans have arrived (the exporter batches on a timer).
    pub async fn wait_for(&self, want: usize, within: Duration) -> Vec<ReceivedSpan> {
        let deadline = Instant::now() + within;
        loop {
            let spans = self.spans();
            if spans.len() >= want || Instant::now() > deadline {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn flatten(span: &Span, service_name: &str) -> ReceivedSpan {
    ReceivedSpan {
        name: span.name.clone(),
        kind: SpanKind::try_from(span.kind).unwrap_or(SpanKind::Unspecified),
        trace_id: hex(&span.trace_id),
        span_id: hex(&span.span_id),
        parent_span_id: hex(&span.parent_span_id),
        service_name: service_name.to_owned(),
        attributes: span
            .attributes
            .iter()
            .map(|kv| {
                (
                    kv.key.clone(),
                    kv.value.as_ref().map(text).unwrap_or_default(),
                )
            })
            .collect(),
        error: span.status.as_ref().is_some_and(|s| s.code == 2),
    }
}

fn text(value: &AnyValue) -> String {
    match &value.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}
