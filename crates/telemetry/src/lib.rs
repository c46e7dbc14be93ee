#![forbid(unsafe_code)]
#![warn(missing_docs)]
//! Telemetry for fincode-sidecar: the log subscriber and the metrics registry.
//!
//! - Logs: `tracing` JSON lines on stdout (text for a terminal), level from `log.level`,
//!   overridden by `RUST_LOG`. Span fields (the correlation id) ride on every line.
//! - Metrics: one Prometheus registry, [`Metrics`], built once at start-up. Features add
//!   their families to it through [`Metrics::registry`] when they are built; the admin
//!   port renders it with [`Metrics::render`]. Label values are bounded by construction
//!   (methods, route templates, status classes, error kinds): never a raw path or an id.

mod http_metrics;
mod traces;

use std::sync::{Arc, Mutex};

use fincode_config::{LogConfig, LogFormat};
use prometheus_client::registry::Registry;
use tracing_subscriber::EnvFilter;

pub use self::http_metrics::{DURATION_BUCKETS, HttpLabels, HttpMetrics, status_class};
pub use self::traces::{OtlpHttpClient, SpanRecord, Traces, TracesError};
pub use opentelemetry::{KeyValue, trace::SpanKind};

/// The process's metrics: the registry plus the families the proxy records on the hot
/// path. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
    /// HTTP server/client durations, sidecar errors, business outcomes, auth results.
    pub http: HttpMetrics,
}

// === impl Metrics ===

impl Metrics {
    /// A registry with the HTTP families registered.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let http = HttpMetrics::register(&mut registry);
        Self {
            registry: Arc::new(Mutex::new(registry)),
            http,
        }
    }

    /// Lets a feature register its own families at start-up (not on the hot path).
    pub fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The OpenMetrics text exposition served on `/metrics`.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        // Encoding into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry());
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The content type of [`Metrics::render`].
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Installs the global log subscriber: JSON lines (or text) on stdout; `RUST_LOG`
/// overrides `log.level`. Idempotent: a second call is a no-op.
pub fn init_logging(config: &LogConfig) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.level));
    // Signed audit checkpoints are the trail's independent copy (`audit verify
    // --checkpoints`): no level setting may drop them.
    let filter = match "fincode_audit::checkpoint=info".parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout);
    let _ = match config.format {
        // The span list carries the request's correlation id onto every line logged
        // while the request is being served.
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(true)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

#[cfg(test)]
mod tests;
