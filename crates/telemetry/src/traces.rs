//! OpenTelemetry traces: spans recorded by the proxy, exported over OTLP/HTTP (protobuf).
//!
//! The proxy owns its trace context (W3C `traceparent` continued or started per request,
//! a fresh span id per upstream try sent to FinCode), so spans are not built through an
//! OpenTelemetry `Tracer`, which would mint ids of its own. The proxy hands finished
//! [`SpanRecord`]s to [`Traces::record`], which converts them to the SDK's `SpanData` and
//! queues them on a [`BatchSpanProcessor`].
//!
//! Export never blocks the request path: `record` is a non-blocking push onto a bounded
//! queue (spans are dropped, and the SDK says so once, when it is full). The processor
//! exports from its own thread; the HTTP call itself is handed to the tokio runtime the
//! sidecar already runs, through [`OtlpHttpClient`], because the processor's thread
//! has no reactor of its own to drive hyper.

use std::{
    borrow::Cow,
    error::Error as StdError,
    fmt,
    sync::Arc,
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use fincode_config::{Env, TracesConfig};
use http::{Request, Response};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use opentelemetry::{
    InstrumentationScope, KeyValue,
    trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState},
};
use opentelemetry_http::{HttpClient, HttpError};
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::{
    Resource,
    trace::{BatchSpanProcessor, SpanData, SpanEvents, SpanLinks, SpanProcessor as _},
};

/// Collector replies are tiny; anything bigger is not a collector.
const MAX_COLLECTOR_REPLY: usize = 1024 * 1024;

/// Where the proxy sends finished spans. Cheap to clone; a no-op when export is off.
#[derive(Clone, Default)]
pub struct Traces {
    inner: Option<Arc<Exporting>>,
}

struct Exporting {
    processor: BatchSpanProcessor,
    scope: InstrumentationScope,
}

/// One finished span, in the proxy's own terms.
#[derive(Debug)]
pub struct SpanRecord {
    /// The trace it belongs to.
    pub trace_id: [u8; 16],
    /// This span's id.
    pub span_id: [u8; 8],
    /// The parent span's id, if any.
    pub parent_span_id: Option<[u8; 8]>,
    /// Whether the parent lives in another process (the app's span).
    pub parent_is_remote: bool,
    /// `SERVER` for the app's call, `CLIENT` for a try towards FinCode.
    pub kind: SpanKind,
    /// The span name (`{method} {route}` or `{method}`), bounded by construction.
    pub name: Cow<'static, str>,
    /// When it started.
    pub start: SystemTime,
    /// When it ended.
    pub end: SystemTime,
    /// Semantic-convention attributes; values already redacted.
    pub attributes: Vec<KeyValue>,
    /// Set with the `error.type` when the span failed.
    pub error: Option<Cow<'static, str>>,
}

/// Why trace export could not be set up. Names the key to fix, and says what the cause
/// said (operators read the message alone); the cause is also kept as its `source()`.
#[derive(Debug, thiserror::Error)]
pub enum TracesError {
    /// The OTLP exporter refused its settings.
    #[error(
        "traces.otlp_endpoint (or OTEL_EXPORTER_OTLP_*): the OTLP exporter could not be built: \
         {0}"
    )]
    Exporter(#[source] opentelemetry_otlp::ExporterBuildError),
    /// Export needs the tokio runtime the sidecar runs on.
    #[error("trace export must be started inside the tokio runtime")]
    NoRuntime,
}

// === impl Traces ===

impl Traces {
    /// Starts exporting when an endpoint is configured (`traces.otlp_endpoint`, else
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, else `OTEL_EXPORTER_OTLP_ENDPOINT` plus
    /// `/v1/traces`); otherwise returns the no-op value. `OTEL_SDK_DISABLED=true` turns
    /// export off whatever is configured.
    pub fn from_config(config: &TracesConfig, env: &Env) -> Result<Self, TracesError> {
        if env
            .get("OTEL_SDK_DISABLED")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
        {
            return Ok(Self::default());
        }
        let Some(endpoint) = endpoint(config, env) else {
            return Ok(Self::default());
        };
        let client = OtlpHttpClient::new(config.export_timeout)?;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(client)
            .with_endpoint(endpoint.clone())
            .with_timeout(config.export_timeout)
            .build()
            .map_err(TracesError::Exporter)?;
        let mut processor = BatchSpanProcessor::builder(exporter).build();
        processor.set_resource(
            &Resource::builder()
                .with_service_name(config.service_name.clone())
                .build(),
        );
        tracing::info!(endpoint = %endpoint, sample_ratio = config.sample_ratio, "exporting traces over OTLP/HTTP");
        Ok(Self {
            inner: Some(Arc::new(Exporting {
                processor,
                scope: InstrumentationScope::builder("fincode-sidecar")
                    .with_version(env!("CARGO_PKG_VERSION"))
                    .build(),
            })),
        })
    }

    /// Whether spans are being exported (callers skip building attributes otherwise).
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Queues a finished span for export. Never blocks: a full queue drops the span.
    pub fn record(&self, span: SpanRecord) {
        let Some(exporting) = &self.inner else {
            return;
        };
        let status = match span.error {
            Some(kind) => Status::Error { description: kind },
            None => Status::Unset,
        };
        exporting.processor.on_end(SpanData {
            span_context: SpanContext::new(
                TraceId::from_bytes(span.trace_id),
                SpanId::from_bytes(span.span_id),
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            ),
            parent_span_id: span
                .parent_span_id
                .map_or(SpanId::INVALID, SpanId::from_bytes),
            parent_span_is_remote: span.parent_is_remote,
            span_kind: span.kind,
            name: span.name,
            start_time: span.start,
            end_time: span.end,
            attributes: span.attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status,
            instrumentation_scope: exporting.scope.clone(),
        });
    }

    /// Exports what is queued and stops, waiting at most `timeout`. Called on shutdown
    /// from a blocking-capable context (it joins the exporter thread).
    pub fn shutdown(&self, timeout: Duration) {
        if let Some(exporting) = &self.inner
            && let Err(err) = exporting.processor.shutdown_with_timeout(timeout)
        {
            tracing::warn!(error = %err, "trace export did not finish cleanly on shutdown");
        }
    }
}

impl fmt::Debug for Traces {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Traces")
            .field("enabled", &self.is_enabled())
            .finish()
    }
}

/// The traces endpoint, by the OpenTelemetry rules: the signal-specific variable is used
/// as given; the generic one gets `/v1/traces` appended.
fn endpoint(config: &TracesConfig, env: &Env) -> Option<String> {
    if let Some(uri) = &config.otlp_endpoint {
        return Some(uri.to_string());
    }
    let non_empty = |name| env.get(name).map(str::trim).filter(|v| !v.is_empty());
    if let Some(url) = non_empty("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
        return Some(url.to_owned());
    }
    non_empty("OTEL_EXPORTER_OTLP_ENDPOINT")
        .map(|base| format!("{}/v1/traces", base.trim_end_matches('/')))
}

/// The OTLP exporter's HTTP client: hyper on the sidecar's tokio runtime, rustls with the
/// webpki roots for `https://` collectors.
///
/// The batch processor calls it from its own thread with a plain executor, so each send
/// is spawned onto the runtime and awaited through its join handle, which any executor
/// can wait on.
pub struct OtlpHttpClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    runtime: tokio::runtime::Handle,
    timeout: Duration,
}

impl OtlpHttpClient {
    fn new(timeout: Duration) -> Result<Self, TracesError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| TracesError::NoRuntime)?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(timeout));
        let connector = HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Ok(Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
            runtime,
            timeout,
        })
    }
}

impl fmt::Debug for OtlpHttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtlpHttpClient")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl HttpClient for OtlpHttpClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        let timeout = self.timeout;
        let send = async move {
            let response = client.request(request.map(Full::new)).await?;
            let (head, body) = response.into_parts();
            let body = Limited::new(body, MAX_COLLECTOR_REPLY)
                .collect()
                .await?
                .to_bytes();
            Ok::<_, Box<dyn StdError + Send + Sync>>(Response::from_parts(head, body))
        };
        let task = self
            .runtime
            .spawn(async move { tokio::time::timeout(timeout, send).await });
        match task.await {
            Ok(Ok(result)) => result,
            Ok(Err(_elapsed)) => Err("OTLP export timed out".into()),
            Err(join) => Err(Box::new(join)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(endpoint: Option<&str>) -> TracesConfig {
        TracesConfig {
            otlp_endpoint: endpoint.map(|e| e.parse().unwrap()),
            ..TracesConfig::default()
        }
    }

    #[test]
    fn endpoint_follows_the_otel_precedence() {
        let env = Env::from_pairs([
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://generic:4318/"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:4318/x"),
        ]);
        assert_eq!(
            endpoint(&config(Some("http://cfg:4318/v1/traces")), &env).as_deref(),
            Some("http://cfg:4318/v1/traces")
        );
        assert_eq!(
            endpoint(&config(None), &env).as_deref(),
            Some("http://traces:4318/x")
        );
        let generic = Env::from_pairs([("OTEL_EXPORTER_OTLP_ENDPOINT", "http://generic:4318/")]);
        assert_eq!(
            endpoint(&config(None), &generic).as_deref(),
            Some("http://generic:4318/v1/traces")
        );
        assert_eq!(
            endpoint(
                &config(None),
                &Env::from_pairs::<[(&str, &str); 0], _, _>([])
            ),
            None
        );
    }

    #[tokio::test]
    async fn no_endpoint_or_sdk_disabled_means_no_export() {
        let off = Traces::from_config(
            &config(None),
            &Env::from_pairs::<[(&str, &str); 0], _, _>([]),
        )
        .unwrap();
        assert!(!off.is_enabled());
        let disabled = Traces::from_config(
            &config(Some("http://127.0.0.1:1/v1/traces")),
            &Env::from_pairs([("OTEL_SDK_DISABLED", "TRUE")]),
        )
        .unwrap();
        assert!(!disabled.is_enabled());
    }
}
