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

mod access_log;
mod http_metrics;
mod span_fields;
mod traces;

use std::sync::{Arc, Mutex};

use fincode_config::{LogConfig, LogFormat};
use prometheus_client::registry::Registry;
use tracing_subscriber::{
    EnvFilter,
    fmt::{
        MakeWriter, SubscriberBuilder,
        format::{Format, Json},
    },
};

pub use self::access_log::{AccessLog, DEFAULT_CAPACITY, flush_access_log};
pub use self::span_fields::JsonSpanFields;

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
        registry.register(
            "fincode_access_log_dropped",
            "Access log lines dropped because the log writer was behind",
            access_log::DROPPED.clone(),
        );
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
/// overrides `log.level`. Idempotent: a second call is a no-op and returns `None`.
///
/// The returned [`LogLevel`] changes the level of the running subscriber (a config
/// reload). The filter sits behind `tracing-subscriber`'s reload layer; plain level
/// directives stay cached per call site, so this costs nothing per event until used.
///
/// With the JSON format it also starts the process's [`AccessLog`] writer, which the
/// proxy uses instead of a `tracing` event for its access lines.
pub fn init_logging(config: &LogConfig) -> Option<LogLevel> {
    match config.format {
        LogFormat::Json => {
            let builder = json_subscriber(&config.level, std::io::stdout).with_filter_reloading();
            let handle = builder.reload_handle();
            let installed = builder.try_init().ok().map(|()| LogLevel::new(handle));
            if installed.is_some() {
                match AccessLog::spawn(
                    std::io::stdout(),
                    DEFAULT_CAPACITY,
                    access_log::DROPPED.clone(),
                ) {
                    Ok(log) => log.install(),
                    // Access lines stay `tracing` events: slower, not lost.
                    Err(error) => tracing::warn!(%error, "no access log writer thread"),
                }
            }
            installed
        }
        LogFormat::Text => {
            let builder = tracing_subscriber::fmt()
                .with_env_filter(filter(&config.level))
                .with_writer(std::io::stdout);
            let builder = builder.with_filter_reloading();
            let handle = builder.reload_handle();
            builder.try_init().ok().map(|()| LogLevel::new(handle))
        }
    }
}

/// The JSON line subscriber (not installed) at `level`, writing to `writer`: the one
/// definition of the JSON log shape, which the access log reproduces and its tests
/// compare against.
pub fn json_subscriber<W>(
    level: &str,
    writer: W,
) -> SubscriberBuilder<JsonSpanFields, Format<Json>, EnvFilter, W>
where
    W: for<'writer> MakeWriter<'writer> + Send + Sync + 'static,
{
    // The span list carries the request's correlation id onto every line logged while
    // the request is being served.
    tracing_subscriber::fmt()
        .with_env_filter(filter(level))
        .with_writer(writer)
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(true)
        // The same span objects as `.json()`'s own field formatter, built for less.
        .fmt_fields(JsonSpanFields)
}

/// `level` as an `EnvFilter`, unless `RUST_LOG` overrides it.
fn filter(level: &str) -> EnvFilter {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    // Signed audit checkpoints are the trail's independent copy (`audit verify
    // --checkpoints`): no level setting may drop them.
    match "fincode_audit::checkpoint=info".parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    }
}

/// Sets the level of the subscriber [`init_logging`] installed.
pub struct LogLevel {
    set: Box<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync>,
}

impl LogLevel {
    fn new<S: 'static>(handle: tracing_subscriber::reload::Handle<EnvFilter, S>) -> Self {
        Self {
            set: Box::new(move |filter| handle.reload(filter).map_err(|e| e.to_string())),
        }
    }

    /// Applies `level` (a `log.level` directive) from now on. Under `RUST_LOG` this is a
    /// no-op, as at start-up: the variable wins. Fails only if the subscriber is gone.
    pub fn set(&self, level: &str) -> Result<(), String> {
        (self.set)(filter(level))
    }

    /// Whether `RUST_LOG` is set, so `log.level` is ignored.
    pub fn overridden() -> bool {
        std::env::var_os(EnvFilter::DEFAULT_ENV).is_some()
    }
}

impl std::fmt::Debug for LogLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogLevel").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
