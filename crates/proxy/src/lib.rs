#![forbid(unsafe_code)]
#![warn(missing_docs)]
//! The egress proxy: the app calls `http://127.0.0.1:8080/...` without credentials and
//! the sidecar forwards to `upstream.base_url` over rustls with its own.
//!
//! The stack is assembled in one place, [`EgressProxy::serve`], outermost first:
//!
//! 1. [`correlation`]: every request gets an `X-Request-ID` (kept or minted), echoed
//!    back, and a W3C trace context sent on to FinCode.
//! 2. [`telemetry`]: the access log line, duration metrics, the request span.
//! 3. [`problem`]: errors from any layer below become problem+json responses.
//! 4. [`limits`]: head (431) and body (413) size limits, body streamed through a counter.
//! 5. [`authorize`]: the sidecar's credentials replace whatever the app sent.
//! 6. the upstream client: pooled rustls, HTTP/2 by ALPN, HTTPS only, timeouts.
//!
//! Later layers (audit, load shedding, rate limiting, circuit breaking, retries) slot in
//! between 3 and 5 in the order DESIGN.md 5.1 gives.

pub mod authorize;
pub mod correlation;
mod error;
mod headers;
pub mod limits;
pub mod problem;
pub mod routes;
mod server;
pub mod telemetry;
mod upstream;

use std::{future::Future, path::PathBuf, sync::Arc, time::Duration};

use bytes::Bytes;
use fincode_auth::Credentials;
use fincode_config::{Config, Env};
use fincode_telemetry::Metrics;
use http_body_util::{Either, Full, Limited};
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tower::ServiceBuilder;

pub use self::error::{ErrorKind, SIDECAR_ERROR_HEADER, SidecarError};

/// Why the proxy could not be built from a valid config. Names the key and the fix.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// `upstream.base_url` cannot be used.
    #[error("upstream.base_url: {0}")]
    BaseUrl(&'static str),
    /// `upstream.ca_file` cannot be read or holds no certificate.
    #[error(
        "upstream.ca_file = {path:?}: {detail}; point it at a PEM file with the CA certificate(s)"
    )]
    CaFile {
        /// The configured path.
        path: PathBuf,
        /// What was wrong with it.
        detail: String,
    },
    /// rustls refused the TLS settings.
    #[error("TLS client setup failed: {0}")]
    Tls(rustls::Error),
    /// Credentials could not be built (a variable unset, a bad public key...).
    #[error(transparent)]
    Auth(#[from] fincode_auth::AuthError),
}

/// A request body on its way to FinCode: buffered (replayable) or streamed from the app.
pub type UpstreamBody = Either<Full<Bytes>, Limited<Incoming>>;

/// The egress proxy, built once from the config; [`EgressProxy::serve`] runs it.
#[derive(Debug)]
pub struct EgressProxy {
    upstream: upstream::Upstream<UpstreamBody>,
    metrics: Metrics,
    routes: routes::RouteTable,
    credentials: Credentials,
    max_body: u64,
    max_head: usize,
    drain: Duration,
}

// === impl EgressProxy ===

impl EgressProxy {
    /// Builds the upstream client (TLS roots, pool), the credentials (secrets read from
    /// `env`) and the layers from `config`.
    pub fn new(config: &Config, env: &Env, metrics: Metrics) -> Result<Self, BuildError> {
        let max_body = config.limits.max_request_body_bytes;
        let upstream = upstream::Upstream::new(&config.upstream, max_body)?;
        let transport = Arc::new(upstream::AuthTransport {
            upstream: upstream.clone(),
        });
        let credentials = Credentials::from_config(&config.auth, env, transport)?;
        let http = metrics.http.clone();
        credentials.observe(Arc::new(move |event| match event {
            fincode_auth::AuthEvent::Login { ok } => http.login(ok),
            fincode_auth::AuthEvent::Refresh { ok } => http.token_refresh(ok),
        }));
        Ok(Self {
            routes: routes::RouteTable::new(config.upstream.base_url.path()),
            upstream,
            metrics,
            credentials,
            max_body,
            max_head: config.limits.max_request_header_bytes,
            drain: Duration::from_secs(20),
        })
    }

    /// The credentials, for readiness, the background refresher and logout.
    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// Sets how long in-flight requests may run after shutdown begins.
    #[must_use]
    pub fn with_drain(mut self, drain: Duration) -> Self {
        self.drain = drain;
        self
    }

    /// Serves the app on `listener` until `shutdown` resolves, then drains.
    pub async fn serve(self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        let stack = ServiceBuilder::new()
            .layer(correlation::CorrelationLayer::new())
            .layer(telemetry::TelemetryLayer::new(
                self.metrics.http.clone(),
                self.routes,
            ))
            .layer(problem::ErrorResponderLayer::new())
            .layer(limits::RequestLimitsLayer::new(
                self.max_body,
                self.max_head,
            ))
            .layer(authorize::AuthorizeLayer::new(self.credentials))
            .service(self.upstream);
        server::serve(listener, stack, self.max_head, self.drain, shutdown).await;
    }
}
