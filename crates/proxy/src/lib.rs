#![forbid(unsafe_code)]
#![warn(missing_docs)]
//! The egress proxy: the app calls `http://127.0.0.1:8080/...` without credentials and
//! the sidecar forwards to `upstream.base_url` over rustls with its own.
//!
//! The stack is assembled in one place, [`EgressProxy::serve`], outermost first:
//!
//! 1. [`catch_panic`]: a panic below (a bug) becomes a 500 `internal` problem+json, not
//!    a dropped connection.
//! 2. [`ingress`]: before any layer reads the request, hop-by-hop headers go (a
//!    `Connection` header never removes a header the sidecar manages), secret headers
//!    are marked sensitive, and the path is normalised ([`path`]) so every layer below
//!    and FinCode see the same one.
//! 3. [`correlation`]: every request gets an `X-Request-ID` (kept or minted), echoed
//!    back, and a W3C trace context sent on to FinCode.
//! 4. [`observe`]: the access log line, duration metrics, the request span (named apart
//!    from the `fincode-telemetry` crate it writes through).
//! 5. [`body_log`]: with `log.bodies`, request and response bodies, redacted.
//! 6. [`error_respond`]: errors from any layer below become the problem+json responses
//!    [`SidecarError::to_response`] renders.
//! 7. [`audit`]: one audit record per call, after the response, with its outcome; with
//!    `audit.fail_closed`, a call the trail cannot record is refused before it is sent.
//!    Below the error responder, so the sidecar's own refusals are recorded too.
//! 8. [`guard`]: refused paths (400 `bad_path`) and routes reserved for the sidecar
//!    (403 `forbidden_route`), before they cost a slot or a rate-limit token.
//! 9. [`limits`]: head (431) and body (413) size limits, body streamed through a counter.
//! 10. [`shed`]: a cap on requests in flight (503 `overloaded`).
//! 11. [`rate_limit`]: local token buckets and FinCode's 429s (429 `rate_limited`).
//! 12. [`breaker`]: fails fast while FinCode keeps failing (503 `circuit_open`).
//! 13. [`retry`]: tries again when safe, within attempts, deadline and budget.
//! 14. [`authorize`]: the sidecar's credentials replace whatever the app sent.
//! 15. the client layers (`client.rs`), per try (inside retry): the path placed under
//!     `upstream.base_url`, hop-by-hop headers both ways, a `traceparent` and CLIENT
//!     span per try, the client duration.
//! 16. the upstream client: rustls, HTTP/2 by ALPN, HTTPS only, timeouts, over its own
//!     connection pool (`pool.rs`: a short vector per worker, no hashing, no task per
//!     request). Each egress worker runtime has its own copy of this stack and its own
//!     pool ([`fincode_server::Workers`]); every layer's state is shared between the copies.
//!
//! Request extensions, who writes them and who reads them (responses carry
//! [`ErrorKind`], written by the error responder and `catch_panic`, read by observe
//! and audit; and on FinCode's 401, `Renewed`, written by authorize when it renewed
//! the token, read by retry, which sends that try once more):
//!
//! | extension | written by | read by |
//! |---|---|---|
//! | `fincode_server::Peer` | the server, per connection | audit |
//! | `PathRefused` | ingress | guard |
//! | `Correlated` (the `RequestId` and the `TraceContext`) | correlation | observe, error responder, audit, client span (the trace) |
//! | `Counted` (the route template and the `Tries`) | observe | audit, rate limit, retry, client metrics (the route); error responder, audit, client span (the tries: it counts each try) |
//!
//! Each layer's facts travel as one extension: every extension is an allocation, and the
//! retry layer copies the whole map for every try.

pub mod admit;
pub mod audit;
pub mod authorize;
pub mod body_log;
pub mod breaker;
pub mod catch_panic;
pub mod check;
mod client;
pub mod correlation;
mod error;
pub mod error_respond;
pub mod guard;
mod head;
pub mod headers;
pub mod ingress;
pub mod limits;
pub mod observe;
pub mod path;
mod pool;
pub mod rate_limit;
pub mod reload;
pub mod retry;
pub mod routes;
pub mod shed;
mod svc;
pub mod tap;
mod upstream;

use std::{
    path::PathBuf,
    sync::{Arc, OnceLock},
    time::Duration,
};

use bytes::Bytes;
use fincode_auth::Credentials;
use fincode_config::{Config, Secrets};
use fincode_redact::Redactor;
use fincode_telemetry::{Metrics, Traces};
use http_body_util::{Either, Full, Limited};
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tower::ServiceBuilder;

pub use self::error::{ATTEMPTS_HEADER, ErrorKind, SIDECAR_ERROR_HEADER, SidecarError};

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
        /// What was wrong with it (the PEM reader's words included).
        detail: String,
        /// The PEM reader's error, when the file could not be read.
        #[source]
        source: Option<rustls::pki_types::pem::Error>,
    },
    /// rustls refused the TLS settings.
    #[error("TLS client setup failed: {0}")]
    Tls(#[source] rustls::Error),
    /// `redact.hash_key_env` names a variable, and the [`Secrets`] given hold no hash key.
    ///
    /// `Config::secrets` reports an unset variable itself (naming it), so this means the
    /// secrets were not resolved from the same configuration.
    #[error(
        "redact.hash_key_env: no hash key was resolved for it; resolve the secrets with \
         Config::secrets from this configuration"
    )]
    HashKeyUnresolved,
    /// `rate_limit.routes` names a route the sidecar does not know.
    #[error(
        "rate_limit.routes.\"{0}\": not a known route template, so it would never match; use one of {known}",
        known = routes::templates().join(", ")
    )]
    RateLimitRoute(String),
    /// Credentials could not be built (a bad token or public key...).
    #[error(transparent)]
    Auth(#[from] fincode_auth::AuthError),
}

/// The redactor for `[redact]`: the built-in rules plus the operator's, with the hash key
/// `Config::secrets` read from the variable `redact.hash_key_env` names. The one
/// constructor: the proxy builds its redactor (shared with the audit trail and webhooks)
/// with it, and `preflight` builds the one it self-tests with it, so it tests what `run`
/// uses.
pub fn redactor(
    config: &fincode_config::RedactConfig,
    secrets: &Secrets,
) -> Result<Redactor, BuildError> {
    use fincode_config::FieldAction;
    use fincode_redact::Action;
    use secrecy::ExposeSecret as _;
    let mut builder = Redactor::builder();
    for header in &config.headers {
        builder = builder.header(header);
    }
    for param in &config.query_params {
        builder = builder.query_param(param);
    }
    for (key, action) in &config.fields {
        let action = match action {
            FieldAction::Drop => Action::Drop,
            FieldAction::Mask => Action::MaskLast4,
            FieldAction::Hash => Action::Hash,
        };
        builder = builder.field(key, action);
    }
    if config.hash_key_env.is_some() {
        // Named but absent: refuse rather than silently drop every hashed field.
        let key = secrets
            .hash_key
            .as_ref()
            .ok_or(BuildError::HashKeyUnresolved)?;
        builder = builder.hash_key(key.expose_secret().as_bytes().to_vec().into());
    }
    Ok(builder.build())
}

/// Failed logins and refreshes, and rejected credentials, are security events for the
/// audit trail; successful renewals (one an hour) are not.
fn audit_auth_event(auditor: &fincode_audit::Auditor, event: fincode_auth::AuthEvent) {
    use fincode_audit::Kind;
    use fincode_auth::AuthEvent;
    let record = match event {
        AuthEvent::Login { ok: false } => auditor.record(Kind::Security, "auth.login"),
        AuthEvent::Refresh { ok: false } => auditor.record(Kind::Security, "auth.refresh"),
        AuthEvent::LoginRejected {
            reason: Some(reason),
        } => auditor
            .record(Kind::Security, "auth.login_rejected")
            .error(reason),
        _ => return,
    };
    record.outcome("failure").write();
}

/// What FinCode answered to [`EgressProxy::probe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// FinCode's status.
    pub status: http::StatusCode,
    /// FinCode's `Date` header, when it sent a valid one.
    pub date: Option<std::time::SystemTime>,
    /// The local clock when the request was handed to the client.
    pub sent_at: std::time::SystemTime,
    /// The local clock when the response head arrived; FinCode's `Date` lies between the
    /// two (give or take its one-second resolution).
    pub received_at: std::time::SystemTime,
}

/// A request body on its way to FinCode: buffered (replayable) or streamed from the app.
pub type UpstreamBody =
    Either<Full<Bytes>, Limited<audit::AuditedRequestBody<body_log::LoggedBody<Incoming>>>>;

/// The egress proxy, built once from the config; [`EgressProxy::serve`] runs it.
#[derive(Debug)]
pub struct EgressProxy {
    upstream: upstream::Upstream<UpstreamBody>,
    metrics: Metrics,
    routes: routes::RouteTable,
    credentials: Credentials,
    traces: Traces,
    redactor: Redactor,
    sample_ratio: f64,
    body_log: body_log::BodyLogLayer,
    ingress: ingress::IngressLayer,
    guard: guard::GuardLayer,
    shed: shed::LoadShedLayer,
    rate_limit: rate_limit::RateLimitLayer,
    breaker: breaker::Breaker,
    retry: retry::RetryLayer,
    max_body: u64,
    max_head: usize,
    drain: Duration,
    /// `upstream.request_timeout`, bounding a whole [`EgressProxy::probe`].
    request_timeout: Duration,
    /// Set by [`Self::with_auditor`]; read by the layer and by the credentials' observer.
    audit: Arc<OnceLock<fincode_audit::Auditor>>,
}

// === impl EgressProxy ===

impl EgressProxy {
    /// Builds the upstream client (TLS roots, pool), the credentials and the layers from
    /// `config` and the `secrets` resolved from it (`Config::secrets`).
    pub fn new(config: &Config, secrets: &Secrets, metrics: Metrics) -> Result<Self, BuildError> {
        let redactor = redactor(&config.redact, secrets)?;
        let max_body = config.limits.max_request_body_bytes;
        let upstream = upstream::Upstream::new(&config.upstream, max_body)?;
        // Auth calls are not app calls: they get no spans and no client-duration series.
        let transport = Arc::new(upstream::AuthTransport {
            client: client::client(upstream.target().clone(), upstream::Spans::default())
                .service(upstream.clone()),
            authority: upstream.target().authority().clone(),
            timeout: config.upstream.request_timeout,
        });

        let credentials = Credentials::from_config(&config.auth, secrets, transport)?;
        let http = metrics.http.clone();
        let audit = Arc::new(OnceLock::<fincode_audit::Auditor>::new());
        let auditor = audit.clone();
        credentials.observe(Arc::new(move |event| {
            match event {
                fincode_auth::AuthEvent::Login { ok } => http.login(ok),
                fincode_auth::AuthEvent::Refresh { ok } => http.token_refresh(ok),
                fincode_auth::AuthEvent::LoginRejected { reason } => http.login_rejected(reason),
                fincode_auth::AuthEvent::Schedule {
                    expires_at,
                    renews_at,
                } => http.token_schedule(expires_at, renews_at),
            }
            if let Some(auditor) = auditor.get() {
                audit_auth_event(auditor, event);
            }
        }));
        let throttle = rate_limit::Throttle::default();
        let (shed, rate_limit, breaker, retry) = {
            let mut registry = metrics.registry();
            let upstream_host = config.upstream.base_url.host().unwrap_or("fincode");
            (
                shed::LoadShedLayer::new(config.limits.max_concurrent_requests, &mut registry),
                rate_limit::RateLimitLayer::new(
                    &config.rate_limit,
                    throttle.clone(),
                    &mut registry,
                )?,
                breaker::Breaker::new(&config.breaker, upstream_host, &mut registry),
                retry::RetryLayer::new(
                    &config.retry,
                    config.upstream.request_timeout,
                    throttle,
                    config.rate_limit.upstream_backoff,
                    &mut registry,
                ),
            )
        };
        let auth = &config.auth;
        let managed = auth
            .extra_headers
            .keys()
            .filter_map(|name| http::HeaderName::from_bytes(name.as_bytes()).ok())
            .chain([auth.device_id_header.clone()]);
        let ingress = ingress::IngressLayer::new(headers::HeaderPolicy::new(managed, &auth.header));
        let guard = guard::GuardLayer::new(
            config.upstream.base_url.path(),
            auth.mode != fincode_config::AuthMode::None,
            [
                auth.login_path.as_str(),
                auth.refresh_path.as_str(),
                auth.logout_path.as_str(),
            ],
        );
        Ok(Self {
            ingress,
            guard,
            shed,
            rate_limit,
            breaker,
            retry,
            routes: routes::RouteTable::new(config.upstream.base_url.path()),
            upstream,
            metrics,
            credentials,
            traces: Traces::default(),
            sample_ratio: config.traces.sample_ratio,
            body_log: body_log::BodyLogLayer::new(&config.log, redactor.clone()),
            redactor,
            max_body,
            max_head: config.limits.max_request_header_bytes,
            drain: Duration::from_secs(20),
            request_timeout: config.upstream.request_timeout,
            audit,
        })
    }

    /// The circuit breaker in front of FinCode, for readiness and tests.
    pub fn breaker(&self) -> &breaker::Breaker {
        &self.breaker
    }

    /// Handles that apply a reloaded config's tunable settings to this proxy once it
    /// serves (see [`reload`]).
    pub fn reloader(&self) -> reload::ProxyReloader {
        reload::ProxyReloader {
            rate_limit: self.rate_limit.clone(),
            retry: self.retry.clone(),
            breaker: self.breaker.clone(),
            shed: self.shed.clone(),
        }
    }

    /// The credentials, for readiness, the background refresher and logout.
    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// Sends one `GET path_and_query` (below `upstream.base_url`) to FinCode with the
    /// sidecar's credentials, straight through the upstream client: no app-facing layer
    /// (no retry, breaker, rate limit or audit record), bounded by
    /// `upstream.request_timeout` for the whole exchange. The body is read and discarded.
    ///
    /// For `fincode-sidecar preflight`: a harmless authenticated call that proves the
    /// credentials and TLS settings work, and brings back FinCode's `Date` header to
    /// compare clocks with. Only `GET`, so it can never create anything at FinCode.
    /// Without `with_credentials` it goes out bare (FinCode's 401 still has a `Date`).
    pub async fn probe(
        &self,
        path_and_query: &str,
        with_credentials: bool,
    ) -> Result<Probe, SidecarError> {
        use http_body_util::BodyExt as _;
        use tower::Service as _;
        let uri: http::Uri = path_and_query.parse().map_err(|_| {
            SidecarError::new(
                ErrorKind::BadPath,
                format!("not a path: {path_and_query:?}"),
            )
        })?;
        let mut request = http::Request::new(Either::Left(Full::new(Bytes::new())));
        *request.uri_mut() = uri;
        if with_credentials {
            self.credentials
                .apply(request.headers_mut())
                .await
                .map_err(|failure| SidecarError::new(ErrorKind::AuthFailed, failure.to_string()))?;
        }
        let mut upstream = client::client(self.upstream.target().clone(), self.client_spans())
            .service(self.upstream.clone());
        let timeout = self.request_timeout;
        let exchange = async move {
            let sent_at = std::time::SystemTime::now();
            let response = upstream.call(request).await?;
            let received_at = std::time::SystemTime::now();
            let status = response.status();
            let date = response
                .headers()
                .get(http::header::DATE)
                .and_then(|value| value.to_str().ok())
                .and_then(|text| httpdate::parse_http_date(text).ok());
            // Drained so the pooled connection can be reused; never kept (it may hold
            // personal data).
            let _ = Limited::new(response.into_body(), 1024 * 1024)
                .collect()
                .await;
            Ok(Probe {
                status,
                date,
                sent_at,
                received_at,
            })
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or_else(|_elapsed| {
                Err(SidecarError::new(
                    ErrorKind::UpstreamTimeout,
                    format!(
                        "FinCode sent no complete answer within {} (upstream.request_timeout)",
                        upstream::humanize(timeout)
                    ),
                ))
            })
    }

    /// What the client layers record per try: a CLIENT span into the proxy's traces
    /// (its URL redacted) and the client duration.
    fn client_spans(&self) -> upstream::Spans {
        upstream::Spans {
            traces: self.traces.clone(),
            redactor: self.redactor.clone(),
            metrics: Some(self.metrics.http.clone()),
        }
    }

    /// Records a SERVER span per app call and a CLIENT span per try into `traces`.
    #[must_use]
    pub fn with_traces(mut self, traces: Traces) -> Self {
        self.traces = traces;
        self
    }

    /// The redactor built from `[redact]`, shared with everything else that writes down
    /// what passed through.
    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    /// Records every app call into `auditor` (see [`audit`]).
    #[must_use]
    pub fn with_auditor(self, auditor: fincode_audit::Auditor) -> Self {
        let _ = self.audit.set(auditor);
        self
    }

    /// Sets how long in-flight requests may run after shutdown begins.
    #[must_use]
    pub fn with_drain(mut self, drain: Duration) -> Self {
        self.drain = drain;
        self
    }

    /// Serves the app on `listener` with `server`'s limits (`[listeners.egress]`) until
    /// `shutdown` is cancelled, then drains. With `workers` (see [`fincode_server::Workers`]),
    /// each of those runtimes accepts connections and serves them (see
    /// `fincode_server::Server::serve_on`), with its own copy of the stack and its own
    /// upstream pool, so a request and the upstream connection it uses stay on one
    /// thread; without, everything runs on the calling runtime with one pool.
    pub async fn serve(
        self,
        server: fincode_server::Server,
        listener: TcpListener,
        workers: &[tokio::runtime::Handle],
        shutdown: fincode_server::CancellationToken,
    ) {
        // A little room over the limit so that the limits layer, not the parser, answers a
        // slightly oversized head, with a problem+json 431. Heads far over the limit get
        // hyper's bare 431.
        let server = server
            .with_max_header_bytes(self.max_head * 2)
            .panics_answered_by_service();
        if workers.is_empty() {
            let stack = self.stack(self.upstream.clone());
            server.serve(listener, stack, shutdown, self.drain).await;
        } else {
            let stacks = workers
                .iter()
                .map(|runtime| (runtime.clone(), self.stack(self.upstream.with_own_pool())))
                .collect();
            server
                .serve_on(listener, stacks, shutdown, self.drain)
                .await;
        }
    }

    /// The stack, outermost layer first (see the crate docs), in front of `upstream`.
    fn stack(
        &self,
        upstream: upstream::Upstream<UpstreamBody>,
    ) -> impl tower::Service<
        http::Request<Incoming>,
        Response = http::Response<
            impl http_body::Body<Data = Bytes, Error = impl Into<BoxError>> + Send + 'static,
        >,
        Error = std::convert::Infallible,
        Future = impl Send + 'static,
    > + Clone
    + Send
    + 'static {
        ServiceBuilder::new()
            .layer(catch_panic::CatchPanicLayer::new(self.metrics.http.clone()))
            .layer(self.ingress.clone())
            .layer(correlation::CorrelationLayer::new(
                if self.traces.is_enabled() {
                    self.sample_ratio
                } else {
                    1.0
                },
            ))
            .layer(observe::ObserveLayer::new(
                self.metrics.http.clone(),
                self.routes.clone(),
                self.traces.clone(),
                self.redactor.clone(),
            ))
            .layer(self.body_log.clone())
            .layer(error_respond::ErrorResponderLayer::new())
            .layer(audit::AuditLayer::new(self.audit.get().cloned()))
            .layer(self.guard.clone())
            .layer(limits::RequestLimitsLayer::new(
                self.max_body,
                self.max_head,
            ))
            .layer(self.shed.clone())
            .layer(self.rate_limit.clone())
            .layer(breaker::BreakerLayer::new(self.breaker.clone()))
            .layer(self.retry.clone())
            .layer(authorize::AuthorizeLayer::new(self.credentials.clone()))
            // Per try, so inside retry: rewrite, hop-by-hop, traceparent and span, metrics.
            .layer(client::client(
                upstream.target().clone(),
                self.client_spans(),
            ))
            .service(upstream)
    }
}

/// A boxed error, as bodies report them.
type BoxError = Box<dyn std::error::Error + Send + Sync>;
