//! The upstream client: pooled keep-alive connections to FinCode over rustls, HTTP/2
//! when ALPN offers it, HTTPS only. The connections are [`crate::pool`]'s, one pool per
//! egress worker.
//!
//! This is the innermost service of the egress stack: it bounds the wait for the
//! response head and classifies failures into [`SidecarError`]s an app can act on. The
//! layers around it ([`crate::client`]) map the app's path onto `upstream.base_url`,
//! strip hop-by-hop headers both ways (the fixed list towards FinCode: the app's
//! `Connection` list was handled at ingress, see [`crate::ingress`]), and record each
//! try's span, `traceparent` and duration.
//! It never falls back to plain HTTP: the connector is built HTTPS-only unless the
//! operator set `upstream.allow_insecure` for tests.

use std::{
    borrow::Cow,
    error::Error as StdError,
    future::Future,
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use fincode_config::UpstreamConfig;
use fincode_redact::Redactor;
use fincode_server::tls;
use fincode_telemetry::{HttpMetrics, KeyValue, SpanKind, SpanRecord, Traces};
use http::{Request, Response, Uri, uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnectorBuilder;
use hyper_util::client::legacy::connect::HttpConnector;
use tower::Service;

use crate::{
    BuildError, ErrorKind, SidecarError,
    correlation::TraceContext,
    limits::body_too_large,
    path,
    pool::{self, Connector, Pool, PoolError},
};

/// Where requests go: the scheme and authority of `upstream.base_url` and the path
/// prefix every app path is placed under.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    scheme: uri::Scheme,
    authority: uri::Authority,
    base_path: String,
}

// === impl Target ===

impl Target {
    pub(crate) fn new(base: &Uri) -> Result<Self, BuildError> {
        let (Some(scheme), Some(authority)) = (base.scheme().cloned(), base.authority().cloned())
        else {
            return Err(BuildError::BaseUrl(
                "it must be absolute, like https://acme.fincode.tech/api/v6/services",
            ));
        };
        let base_path = base.path().trim_end_matches('/').to_owned();
        Ok(Self {
            scheme,
            authority,
            base_path,
        })
    }

    /// FinCode's host and port.
    pub(crate) fn authority(&self) -> &uri::Authority {
        &self.authority
    }

    /// An empty connection pool to this target's origin.
    fn pool<B>(&self, connector: Connector, settings: pool::Settings) -> Pool<B> {
        Pool::new(connector, settings, &self.scheme, &self.authority)
    }

    /// The upstream URI for the app's request URI. The app may call either the path
    /// below the base (`/transactionmanagement/...`) or the full path
    /// (`/api/v6/services/transactionmanagement/...`); both reach the same place.
    ///
    /// The path goes through the one normaliser again (the ingress layer already did, so
    /// this borrows): the auth transport's paths come from the config, not the app.
    pub(crate) fn rewrite(&self, uri: &Uri) -> Result<Uri, SidecarError> {
        let path = path::normalise(uri.path())
            .map_err(|why| SidecarError::new(ErrorKind::BadPath, why.to_string()))?;
        let path = path.as_ref();
        // In any letter case, as the route and the guard read it: `/API/V6/Services/...`
        // is already under the base and must not get it twice.
        let under_base = path::strip_base(path, &self.base_path).is_some();
        let mut path_and_query = String::with_capacity(
            self.base_path.len() + path.len() + uri.query().map_or(0, |q| q.len() + 1),
        );
        if !under_base {
            path_and_query.push_str(&self.base_path);
        }
        path_and_query.push_str(path);
        if let Some(query) = uri.query() {
            path_and_query.push('?');
            path_and_query.push_str(query);
        }
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path_and_query)
            .build()
            .map_err(|_| {
                SidecarError::new(
                    ErrorKind::BadRequest,
                    "the request path is not a valid URI path",
                )
            })
    }
}

/// The pooled HTTPS client to FinCode, as a tower service. One `Arc` inside: the stack
/// is cloned per request.
#[derive(Debug)]
pub(crate) struct Upstream<B> {
    inner: Arc<Inner<B>>,
}

#[derive(Debug)]
struct Inner<B> {
    pool: Pool<B>,
    /// What [`Upstream::with_own_pool`] builds another pool from.
    connector: Connector,
    settings: pool::Settings,
    target: Target,
    connect_timeout: Duration,
    max_body: u64,
}

/// What the client layers ([`crate::client`]) record per try: a CLIENT span and the
/// client duration.
#[derive(Clone, Debug, Default)]
pub(crate) struct Spans {
    pub(crate) traces: Traces,
    pub(crate) redactor: Redactor,
    pub(crate) metrics: Option<HttpMetrics>,
}

// Manual impl: `B` need not be `Clone`.
impl<B> Clone for Upstream<B> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

// === impl Upstream ===

impl<B> Upstream<B>
where
    B: http_body::Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    pub(crate) fn new(config: &UpstreamConfig, max_body: u64) -> Result<Self, BuildError> {
        let target = Target::new(&config.base_url)?;
        let tls = tls_config(config)?;

        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(config.connect_timeout));
        http.set_nodelay(true);
        http.set_keepalive(Some(Duration::from_secs(30)));

        let builder = HttpsConnectorBuilder::new().with_tls_config(tls);
        let builder = if config.allow_insecure {
            builder.https_or_http()
        } else {
            builder.https_only()
        };
        let connector = if config.http2 {
            builder.enable_http1().enable_http2().wrap_connector(http)
        } else {
            builder.enable_http1().wrap_connector(http)
        };

        let settings = pool::Settings {
            idle_timeout: config.pool_idle_timeout,
            max_idle: config.pool_max_idle_per_host,
        };
        Ok(Self {
            inner: Arc::new(Inner {
                pool: target.pool(connector.clone(), settings),
                connector,
                settings,
                target,
                connect_timeout: config.connect_timeout,
                max_body,
            }),
        })
    }
}

impl<B> Upstream<B> {
    /// Where requests go: what [`crate::client::RewriteLayer`] needs.
    pub(crate) fn target(&self) -> &Target {
        &self.inner.target
    }
}

impl<B> Upstream<B> {
    /// The same client with a connection pool of its own (empty at first): for a worker
    /// thread, whose requests then only ever use connections that thread drives.
    pub(crate) fn with_own_pool(&self) -> Self {
        let inner = &self.inner;
        Self {
            inner: Arc::new(Inner {
                pool: inner.target.pool(inner.connector.clone(), inner.settings),
                connector: inner.connector.clone(),
                settings: inner.settings,
                target: inner.target.clone(),
                connect_timeout: inner.connect_timeout,
                max_body: inner.max_body,
            }),
        }
    }
}

impl<B> Service<Request<B>> for Upstream<B>
where
    B: http_body::Body<Data = Bytes> + Send + 'static + Unpin,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    type Response = Response<Incoming>;
    type Error = SidecarError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Incoming>, SidecarError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // The pool connects on demand and is always ready.
        Poll::Ready(Ok(()))
    }

    /// Sends `req` as it is: the layers of [`crate::client`] have already placed it
    /// under the base URL and cleaned its headers.
    fn call(&mut self, req: Request<B>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { this.send(req).await })
    }
}

impl<B> Upstream<B>
where
    B: http_body::Body<Data = Bytes> + Send + 'static + Unpin,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    /// No timer here: every caller bounds the exchange already (the retry layer each
    /// try, by `retry.per_try_timeout` and `upstream.request_timeout`; the login
    /// transport and the readiness probe the whole exchange, by `upstream.request_timeout`),
    /// and a second timer per request would only cost.
    async fn send(&self, req: Request<B>) -> Result<Response<Incoming>, SidecarError> {
        self.inner
            .pool
            .send(req)
            .await
            .map_err(|error| self.classify(error))
    }
}

/// One try towards FinCode, recorded as a CLIENT span when it ends.
pub(crate) struct ClientSpan {
    pub(crate) trace: TraceContext,
    pub(crate) span_id: [u8; 8],
    pub(crate) start: SystemTime,
    pub(crate) method: http::Method,
    pub(crate) url: String,
    pub(crate) resend: u32,
    /// FinCode's, from the rewritten URI.
    pub(crate) authority: Option<uri::Authority>,
}

/// How a try ended, as its CLIENT span says.
#[derive(Clone, Copy, Debug)]
pub(crate) enum TryEnd {
    /// FinCode answered with this status.
    Answered(http::StatusCode),
    /// No answer: the sidecar's error kind (`upstream_unreachable`...), or
    /// [`CANCELLED`] for a try dropped before it ended.
    Failed(&'static str),
}

/// `error.type` of a try whose future was dropped before FinCode answered: the retry
/// layer's per-try bound ran out (`retry.per_try_timeout`, `upstream.request_timeout`
/// or `retry.deadline`; the call's own span then says `upstream_timeout`), or the
/// app's call went away.
pub(crate) const CANCELLED: &str = "cancelled";

impl ClientSpan {
    /// The span with the semantic-convention attributes: `error.type` is the sidecar's
    /// error kind when no response came, or the status code for a 4xx/5xx answer.
    pub(crate) fn finish<RB>(self, result: &Result<Response<RB>, SidecarError>) -> SpanRecord {
        self.end(match result {
            Ok(response) => TryEnd::Answered(response.status()),
            Err(error) => TryEnd::Failed(error.kind().code()),
        })
    }

    /// The span of a try that ended as `end` says.
    pub(crate) fn end(self, end: TryEnd) -> SpanRecord {
        let (host, port) = self.authority.as_ref().map_or(("", 443), |authority| {
            (authority.host(), authority.port_u16().unwrap_or(443))
        });
        let mut attributes = vec![
            KeyValue::new("http.request.method", self.method.to_string()),
            KeyValue::new("url.full", self.url),
            KeyValue::new("server.address", host.to_owned()),
            KeyValue::new("server.port", i64::from(port)),
        ];
        if self.resend > 0 {
            attributes.push(KeyValue::new(
                "http.request.resend_count",
                i64::from(self.resend),
            ));
        }
        let error: Option<Cow<'static, str>> = match end {
            TryEnd::Answered(status) => {
                attributes.push(KeyValue::new(
                    "http.response.status_code",
                    i64::from(status.as_u16()),
                ));
                (status.is_client_error() || status.is_server_error())
                    .then(|| Cow::Owned(status.as_str().to_owned()))
            }
            TryEnd::Failed(kind) => Some(Cow::Borrowed(kind)),
        };
        if let Some(kind) = &error {
            attributes.push(KeyValue::new("error.type", kind.clone()));
        }
        SpanRecord {
            trace_id: self.trace.trace_id,
            span_id: self.span_id,
            parent_span_id: Some(self.trace.span_id),
            parent_is_remote: false,
            kind: SpanKind::Client,
            name: self.method.to_string().into(),
            start: self.start,
            end: SystemTime::now(),
            attributes,
            error,
        }
    }
}

impl<B> Upstream<B> {
    /// Names the cause of a client failure in words an operator can act on, and keeps
    /// the client's error as the result's source.
    fn classify(&self, error: PoolError) -> SidecarError {
        classify(
            &error,
            error.is_connect(),
            &self.inner.target.authority,
            self.inner.connect_timeout,
            self.inner.max_body,
        )
        .caused_by(error)
    }
}

/// Classifies a failed try from its error chain. `connecting`: the failure happened
/// while the connection was being set up (TCP connect and TLS handshake), so no byte of
/// the request left and it may be sent again whatever its method. Anything later, a
/// TLS alert or decryption error on an established connection included, may have
/// reached FinCode. Only error kinds and addresses are used: never request content.
fn classify(
    error: &(dyn StdError + 'static),
    connecting: bool,
    authority: &uri::Authority,
    connect_timeout: Duration,
    max_body: u64,
) -> SidecarError {
    let mut cause = Some(error);
    let mut io_error = None;
    let mut tls = None;
    while let Some(err) = cause {
        if err
            .downcast_ref::<http_body_util::LengthLimitError>()
            .is_some()
        {
            return body_too_large(max_body, max_body);
        }
        if tls.is_none() {
            tls = err.downcast_ref::<rustls::Error>();
        }
        if let Some(io) = err.downcast_ref::<io::Error>() {
            if tls.is_none() {
                tls = rustls_inside(io);
            }
            io_error.get_or_insert(io);
        }
        cause = err.source();
    }
    if let Some(tls) = tls {
        if connecting {
            return tls_error(authority, tls).unsent();
        }
        return SidecarError::new(
            ErrorKind::UpstreamUnreachable,
            format!(
                "the TLS connection to FinCode ({authority}) failed after the handshake: {tls}; the request may have reached FinCode"
            ),
        );
    }
    if connecting {
        if timed_out(error) {
            return SidecarError::new(
                ErrorKind::UpstreamTimeout,
                format!(
                    "connecting to FinCode ({authority}) timed out after {} (upstream.connect_timeout)",
                    humanize(connect_timeout)
                ),
            )
            .unsent();
        }
        let why = io_error.map_or_else(|| "connection failed".to_owned(), ToString::to_string);
        return SidecarError::new(
            ErrorKind::UpstreamUnreachable,
            format!("could not connect to FinCode ({authority}): {why}"),
        )
        .unsent();
    }
    let why = io_error.map_or_else(
        || "the connection closed before a complete response".to_owned(),
        ToString::to_string,
    );
    SidecarError::new(
        ErrorKind::UpstreamUnreachable,
        format!("the connection to FinCode ({authority}) failed before a response: {why}"),
    )
}

/// Whether a connect failure was the connect timeout, from the types in its chain: the
/// client's connector reports `upstream.connect_timeout` running out as an `io::Error`
/// of kind `TimedOut` wrapping tokio's `Elapsed` (under hyper-util's connect error);
/// either one, anywhere in the chain, says so. An `io::Error`'s own wrapped error is
/// not in `source()`, so each is looked inside as [`rustls_inside`] does.
fn timed_out(error: &(dyn StdError + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(err) = cause {
        if err.is::<tokio::time::error::Elapsed>() {
            return true;
        }
        if let Some(io) = err.downcast_ref::<io::Error>() {
            if io.kind() == io::ErrorKind::TimedOut {
                return true;
            }
            if io.get_ref().is_some_and(|inner| timed_out(inner)) {
                return true;
            }
        }
        cause = err.source();
    }
    false
}

/// `io::Error` hides a wrapped error from `source()`, and hyper-rustls wraps
/// tokio-rustls's `io::Error` in another one: look inside, layer by layer.
fn rustls_inside(mut io: &io::Error) -> Option<&rustls::Error> {
    loop {
        let inner = io.get_ref()?;
        if let Some(tls) = inner.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        io = inner.downcast_ref::<io::Error>()?;
    }
}

fn tls_error(authority: &uri::Authority, error: &rustls::Error) -> SidecarError {
    SidecarError::new(
        ErrorKind::UpstreamTls,
        format!(
            "TLS handshake with FinCode ({authority}) failed: {error}; the sidecar never falls back to plain HTTP. If FinCode's certificate comes from a private CA, set upstream.ca_file"
        ),
    )
}

/// "250ms", "5s", "1.5s": short and unambiguous in an error detail.
pub(crate) fn humanize(duration: Duration) -> String {
    let ms = duration.as_millis();
    if ms < 1000 || !ms.is_multiple_of(1000) {
        if ms >= 1000 {
            return format!("{}s", duration.as_secs_f64());
        }
        return format!("{ms}ms");
    }
    format!("{}s", duration.as_secs())
}

/// rustls with the webpki roots plus `upstream.ca_file` (its unusable certificates
/// skipped), TLS 1.2 and 1.3 only, ring; hyper-rustls sets ALPN.
fn tls_config(config: &UpstreamConfig) -> Result<rustls::ClientConfig, BuildError> {
    let mut roots = tls::webpki_roots();
    if let Some(path) = &config.ca_file {
        let certs = tls::read_ca_file(path).map_err(|source| BuildError::CaFile {
            path: path.clone(),
            detail: source.to_string(),
            source: Some(source),
        })?;
        let (added, _ignored) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(BuildError::CaFile {
                path: path.clone(),
                detail: "no usable CA certificate in it".to_owned(),
                source: None,
            });
        }
    }
    tls::client_config(roots, tls::TLS12_AND_13, &[]).map_err(BuildError::Tls)
}

/// The upstream client inside its layers ([`crate::client`]).
pub(crate) type Layered<B> = <crate::client::ClientLayers as tower::Layer<Upstream<B>>>::Service;

/// Auth calls (login, refresh, logout) go through the same pooled TLS client, bypassing
/// the app-facing layers: they are the sidecar's own requests.
pub(crate) struct AuthTransport<B> {
    /// The client with its layers, without spans or metrics.
    pub(crate) client: Layered<B>,
    /// FinCode's, for messages.
    pub(crate) authority: uri::Authority,
    /// Bounds the whole exchange, head *and* body (`upstream.request_timeout`). The
    /// client bounds only the head; a FinCode that sends a head and then stalls the body
    /// would otherwise hold a renewal, and every request waiting on it, forever.
    pub(crate) timeout: Duration,
}

/// Largest auth response read; FinCode's are a few KiB.
const MAX_AUTH_RESPONSE: usize = 1024 * 1024;

impl fincode_auth::Transport for AuthTransport<crate::UpstreamBody> {
    fn send(
        &self,
        request: fincode_auth::AuthRequest,
    ) -> fincode_auth::BoxFuture<'_, Result<fincode_auth::AuthResponse, fincode_auth::TransportError>>
    {
        let mut upstream = self.client.clone();
        let timeout = self.timeout;
        let exchange = async move {
            let uri: Uri = request.path.parse().map_err(|error| {
                fincode_auth::TransportError::new(format!("bad auth path {:?}", request.path))
                    .caused_by(error)
            })?;
            let mut req = Request::new(http_body_util::Either::Left(Full::new(request.body)));
            *req.method_mut() = request.method;
            *req.uri_mut() = uri;
            *req.headers_mut() = request.headers;
            let response = upstream
                .call(req)
                .await
                .map_err(|e| fincode_auth::TransportError::new(e.detail()).caused_by(e))?;
            let status = response.status();
            let body = http_body_util::Limited::new(response.into_body(), MAX_AUTH_RESPONSE)
                .collect()
                .await
                .map_err(|e| {
                    fincode_auth::TransportError::new(format!(
                        "reading FinCode's answer failed: {e}"
                    ))
                    .caused_by(e)
                })?
                .to_bytes();
            Ok(fincode_auth::AuthResponse { status, body })
        };
        let authority = self.authority.clone();
        Box::pin(async move {
            tokio::time::timeout(timeout, exchange)
                .await
                .unwrap_or_else(|elapsed| {
                    Err(fincode_auth::TransportError::new(format!(
                        "timed out: FinCode ({authority}) sent no complete answer within {} (upstream.request_timeout)",
                        humanize(timeout)
                    ))
                    .caused_by(elapsed))
                })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(base: &str) -> Target {
        Target::new(&base.parse().unwrap()).unwrap()
    }

    #[test]
    fn places_app_paths_under_the_base_path() {
        let t = target("https://acme.fincode.tech/api/v6/services");
        let uri = t
            .rewrite(
                &"/transactionmanagement/transactions?page=2"
                    .parse()
                    .unwrap(),
            )
            .unwrap();
        assert_eq!(
            uri.to_string(),
            "https://acme.fincode.tech/api/v6/services/transactionmanagement/transactions?page=2"
        );
    }

    #[test]
    fn keeps_paths_that_already_carry_the_base_path() {
        let t = target("https://acme.fincode.tech/api/v6/services/");
        let uri = t
            .rewrite(&"/api/v6/services/securitymanagement/login".parse().unwrap())
            .unwrap();
        assert_eq!(
            uri.to_string(),
            "https://acme.fincode.tech/api/v6/services/securitymanagement/login"
        );
        // A path that merely starts with the same letters is not under the base.
        let uri = t.rewrite(&"/api/v6/servicesX".parse().unwrap()).unwrap();
        assert_eq!(
            uri.to_string(),
            "https://acme.fincode.tech/api/v6/services/api/v6/servicesX"
        );
        // The base in another letter case is still the base: never prefixed twice.
        let uri = t
            .rewrite(
                &"/API/V6/Services/transactionmanagement/transactions"
                    .parse()
                    .unwrap(),
            )
            .unwrap();
        assert_eq!(
            uri.to_string(),
            "https://acme.fincode.tech/API/V6/Services/transactionmanagement/transactions"
        );
    }

    #[test]
    fn refuses_ambiguous_paths() {
        let t = target("https://acme.fincode.tech/api/v6/services");
        for bad in [
            "/../admin",
            "/a/./b",
            "/a/%2e%2E/b",
            "/..",
            "/a/.%2e",
            "/%2E/x",
            "/a/..%2fb",
            "/a/..;/b",
            "/a/%252e",
        ] {
            let err = t.rewrite(&bad.parse().unwrap()).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::BadPath, "{bad}");
        }
    }

    #[test]
    fn dot_like_segments_that_are_not_dot_segments_pass_and_slashes_collapse() {
        let t = target("https://acme.fincode.tech/api/v6/services");
        for fine in ["/a/.../b", "/a/.x/b", "/v1.0/x"] {
            assert!(t.rewrite(&fine.parse().unwrap()).is_ok(), "{fine}");
        }
        let uri = t.rewrite(&"//a//b?x=1".parse().unwrap()).unwrap();
        assert_eq!(
            uri.to_string(),
            "https://acme.fincode.tech/api/v6/services/a/b?x=1"
        );
    }

    /// What tokio-rustls and hyper-rustls make of a rustls error: an `io::Error` inside
    /// an `io::Error`, under the client's own error.
    #[derive(Debug)]
    struct Wrapped(io::Error);

    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("client error")
        }
    }

    impl StdError for Wrapped {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&self.0)
        }
    }

    fn tls_failure(error: rustls::Error) -> Wrapped {
        Wrapped(io::Error::other(io::Error::new(
            io::ErrorKind::InvalidData,
            error,
        )))
    }

    fn classify_test(error: &Wrapped, connecting: bool) -> SidecarError {
        let authority = uri::Authority::from_static("acme.fincode.tech");
        classify(error, connecting, &authority, Duration::from_secs(2), 1024)
    }

    #[test]
    fn a_tls_failure_in_the_handshake_is_unsent_and_named_so() {
        let error = tls_failure(rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer,
        ));
        let classified = classify_test(&error, true);
        assert_eq!(classified.kind(), ErrorKind::UpstreamTls);
        assert!(!classified.may_have_been_sent());
        assert!(classified.detail().contains("handshake"));
    }

    #[test]
    fn a_tls_failure_after_the_handshake_may_have_been_sent() {
        for failure in [
            rustls::Error::DecryptError,
            rustls::Error::AlertReceived(rustls::AlertDescription::InternalError),
            rustls::Error::AlertReceived(rustls::AlertDescription::BadRecordMac),
        ] {
            let classified = classify_test(&tls_failure(failure), false);
            assert_eq!(classified.kind(), ErrorKind::UpstreamUnreachable);
            assert!(classified.may_have_been_sent(), "never retried blindly");
            assert!(!classified.detail().contains("handshake failed"));
        }
    }

    #[test]
    fn plain_io_failures_are_unsent_only_while_connecting() {
        let refused = Wrapped(io::Error::from(io::ErrorKind::ConnectionRefused));
        let classified = classify_test(&refused, true);
        assert_eq!(classified.kind(), ErrorKind::UpstreamUnreachable);
        assert!(!classified.may_have_been_sent());
        let reset = Wrapped(io::Error::from(io::ErrorKind::ConnectionReset));
        let classified = classify_test(&reset, false);
        assert_eq!(classified.kind(), ErrorKind::UpstreamUnreachable);
        assert!(classified.may_have_been_sent());
        let timed_out = Wrapped(io::Error::from(io::ErrorKind::TimedOut));
        let classified = classify_test(&timed_out, true);
        assert_eq!(classified.kind(), ErrorKind::UpstreamTimeout);
        assert!(!classified.may_have_been_sent());
    }

    /// A real `Elapsed`, as the connector's `tokio::time::timeout` makes it.
    async fn elapsed() -> tokio::time::error::Elapsed {
        tokio::time::timeout(Duration::ZERO, std::future::pending::<()>())
            .await
            .unwrap_err()
    }

    #[tokio::test(start_paused = true)]
    async fn a_connect_timeout_is_classified_by_type() {
        // hyper-util's connector: `io::Error(TimedOut, Elapsed)` under its connect error.
        let as_hyper_util_says = Wrapped(io::Error::new(io::ErrorKind::TimedOut, elapsed().await));
        // The same `Elapsed` under an `io::Error` of another kind: found inside it.
        let wrapped_otherwise = Wrapped(io::Error::other(elapsed().await));
        for error in [as_hyper_util_says, wrapped_otherwise] {
            let classified = classify_test(&error, true);
            assert_eq!(classified.kind(), ErrorKind::UpstreamTimeout, "{error:?}");
            assert!(!classified.may_have_been_sent());
            assert!(
                classified.detail().contains("upstream.connect_timeout"),
                "{}",
                classified.detail()
            );
        }
        // Words alone do not make a timeout.
        let refused = Wrapped(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            "ConnectTimeout",
        ));
        assert_eq!(
            classify_test(&refused, true).kind(),
            ErrorKind::UpstreamUnreachable
        );
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(humanize(Duration::from_millis(250)), "250ms");
        assert_eq!(humanize(Duration::from_secs(5)), "5s");
        assert_eq!(humanize(Duration::from_millis(1500)), "1.5s");
    }
}
