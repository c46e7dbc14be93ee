//! The ack path: what happens between FinCode's POST and our 200.
//!
//! Checks run in DESIGN.md's order, cheapest and least trusting first, so nothing
//! expensive is done for a request that will be refused anyway:
//!
//! 1. method and path (405, 404);
//! 2. declared body size (413, before a byte of the body is read);
//! 3. source address against `webhooks.allow_ips` (403), believing `X-Forwarded-For`
//!    only from `webhooks.trusted_proxies`;
//! 4. the body, read up to the limit (413) within `webhooks.body_read_timeout` (408), the
//!    request evictable at the connection cap meanwhile ([`Evictable`]); its bytes counted against a budget shared by
//!    every request not yet verified (`webhooks.max_unverified_bytes`: 503 with
//!    `Retry-After` over it, so a flood of slow unsigned bodies cannot exhaust memory);
//! 5. signature and timestamp over the raw bytes (401, with the same generic body for
//!    every reason: a forger learns nothing about which check failed);
//! 6. JSON (400).
//!
//! Then the event is committed with its dedupe key in one durable transaction (group
//! commit across concurrent requests) and only then answered 200: a duplicate is
//! answered 200 too (FinCode must stop redelivering) and never stored twice. A store
//! failure is a 503 so FinCode redelivers later. Delivery to the app happens elsewhere
//! ([`crate::dispatcher`]); nothing slower than the commit is on this path.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Instant,
};

use bytes::Bytes;
use fincode_store::{EventStore, Inserted, NewEvent};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use ipnet::IpNet;
use tokio::sync::{Notify, Semaphore};

use fincode_config::KeyTemplate;
use fincode_server::Evictable;

use crate::{
    audit::{Audit, Source},
    dispatcher::Clock,
    keys::{dedupe_key, order_key},
    metrics::WebhookMetrics,
    verify::Verifier,
};

/// Headers not forwarded to the app: hop-by-hop, framing, and what the sidecar sets.
const NOT_FORWARDED: [&str; 11] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "x-request-id",
    "authorization",
];

/// Everything the ack path needs, built once from the config.
#[derive(Debug)]
pub struct Listener {
    pub(crate) paths: Vec<String>,
    pub(crate) max_body: usize,
    /// How long a sender may take to send the body once the head arrived
    /// (`webhooks.body_read_timeout`): a slow sender must not hold a connection (and a
    /// task) for long.
    pub(crate) body_read_timeout: std::time::Duration,
    /// Bytes of unverified bodies that may be buffered at once, across every request.
    pub(crate) unverified: Arc<Semaphore>,
    pub(crate) allow_ips: Vec<IpNet>,
    pub(crate) trusted_proxies: Vec<IpNet>,
    pub(crate) verifier: Verifier,
    /// A header that carries a secret itself (the `shared-secret` scheme's): never stored,
    /// never forwarded to the app.
    pub(crate) secret_header: Option<HeaderName>,
    pub(crate) dedupe: KeyTemplate,
    pub(crate) order: Option<KeyTemplate>,
    pub(crate) store: Arc<dyn EventStore>,
    pub(crate) metrics: WebhookMetrics,
    /// Wakes the dispatcher when a new event is committed.
    pub(crate) wake: Arc<Notify>,
    /// Records each request's fate in the audit trail.
    pub(crate) audit: Audit,
    /// Stamps `received_at` and judges signed timestamps: the dispatcher's clock.
    pub(crate) clock: Clock,
}

/// How long a sender over the unverified-bytes budget is asked to wait (`Retry-After`).
const BUDGET_RETRY_AFTER: HeaderValue = HeaderValue::from_static("1");

/// A refusal: status, reason label, and a body that says no more than it must.
struct Refusal {
    status: StatusCode,
    reason: &'static str,
    body: &'static str,
    retry_after: Option<HeaderValue>,
}

const fn refuse(status: StatusCode, reason: &'static str, body: &'static str) -> Refusal {
    Refusal {
        status,
        reason,
        body,
        retry_after: None,
    }
}

/// Bytes taken from the unverified budget, given back when dropped.
struct Reserved<'a> {
    budget: &'a Semaphore,
    bytes: usize,
}

impl Reserved<'_> {
    /// Takes `bytes` more, without waiting; `false` when the budget has not that much left.
    fn take(&mut self, bytes: usize) -> bool {
        let Ok(n) = u32::try_from(bytes) else {
            return false;
        };
        match self.budget.try_acquire_many(n) {
            Ok(permit) => {
                permit.forget();
                self.bytes += bytes;
                true
            }
            Err(_) => false,
        }
    }
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        self.budget.add_permits(self.bytes);
    }
}

// === impl Listener ===

impl Listener {
    /// Answers one request from `peer`.
    pub async fn handle<B>(&self, req: Request<B>, peer: SocketAddr) -> Response<Full<Bytes>>
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let source = self.source(peer, req.headers());
        match self.accept(req, source).await {
            Ok(body) => json(StatusCode::OK, body),
            Err(refusal) => {
                self.metrics.rejected(refusal.reason);
                self.audit
                    .rejected(source, refusal.reason, refusal.status.as_u16());
                let retry_after = refusal.retry_after.clone();
                tracing::info!(
                    target: "fincode_sidecar::webhooks",
                    %peer,
                    status = refusal.status.as_u16(),
                    reason = refusal.reason,
                    "webhook refused"
                );
                let mut response = json(refusal.status, refusal.body);
                if let Some(retry_after) = retry_after {
                    response
                        .headers_mut()
                        .insert(header::RETRY_AFTER, retry_after);
                }
                response
            }
        }
    }

    async fn accept<B>(&self, req: Request<B>, source: Source) -> Result<&'static str, Refusal>
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        if !self.paths.iter().any(|p| p == req.uri().path()) {
            return Err(refuse(
                StatusCode::NOT_FOUND,
                "not_found",
                r#"{"error":"not found"}"#,
            ));
        }
        if req.method() != Method::POST {
            return Err(refuse(
                StatusCode::METHOD_NOT_ALLOWED,
                "method",
                r#"{"error":"POST only"}"#,
            ));
        }
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > self.max_body as u64) {
            return Err(too_large());
        }
        if !self.allow_ips.is_empty() {
            let source = source.addr.ip();
            if !self.allow_ips.iter().any(|net| net.contains(&source)) {
                return Err(refuse(
                    StatusCode::FORBIDDEN,
                    "ip_not_allowed",
                    r#"{"error":"forbidden"}"#,
                ));
            }
        }
        // Until the signature checks out the sender is nobody: at the connection cap the
        // server may close this connection to make room (for FinCode's signed event,
        // say) rather than refuse the newcomer.
        let evictable = req.extensions().get::<Evictable>().map(Evictable::mark);
        let (parts, body) = req.into_parts();
        // Held until the answer: the bytes stay buffered until the event is committed.
        let mut reserved = Reserved {
            budget: &self.unverified,
            bytes: 0,
        };
        let read =
            tokio::time::timeout(self.body_read_timeout, self.read_body(body, &mut reserved));
        let Ok(read) = read.await else {
            return Err(refuse(
                StatusCode::REQUEST_TIMEOUT,
                "body_read",
                r#"{"error":"the body was not sent in time"}"#,
            ));
        };
        let body = read?;
        let read_at = Instant::now();
        if let Err(rejection) = self
            .verifier
            .verify(&parts.headers, &body, self.clock.now())
        {
            return Err(refuse(
                StatusCode::UNAUTHORIZED,
                rejection.as_str(),
                r#"{"error":"unauthorized"}"#,
            ));
        }
        drop(evictable);
        let Ok(event) = serde_json::from_slice::<serde_json::Value>(&body) else {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "bad_json",
                r#"{"error":"the body is not JSON"}"#,
            ));
        };
        let correlation_id = uuid::Uuid::now_v7().to_string();
        let new = NewEvent {
            dedupe_key: dedupe_key(&self.dedupe, &event, &parts.headers, &body),
            order_key: self
                .order
                .as_ref()
                .and_then(|t| order_key(t, &event, &parts.headers)),
            correlation_id: correlation_id.clone(),
            headers: forwarded(&parts.headers, self.secret_header.as_ref()),
            body,
            received_at: self.clock.now(),
        };
        let inserted = match self.store.insert(new).await {
            Ok(inserted) => inserted,
            Err(error) => {
                tracing::error!(%error, "webhook not stored; answered 503 so FinCode redelivers");
                return Err(refuse(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    r#"{"error":"try again later"}"#,
                ));
            }
        };
        self.metrics.received();
        self.metrics.ack(read_at.elapsed().as_secs_f64());
        match inserted {
            Inserted::New(id) => {
                tracing::debug!(target: "fincode_sidecar::webhooks", id, "webhook stored");
                self.wake.notify_one();
                self.audit.received(source, &event, id, &correlation_id);
                Ok(r#"{"status":"accepted"}"#)
            }
            Inserted::Duplicate(id) => {
                self.metrics.duplicate();
                self.audit.duplicate(source, &event, id);
                tracing::debug!(target: "fincode_sidecar::webhooks", id, "duplicate webhook acknowledged");
                Ok(r#"{"status":"duplicate"}"#)
            }
        }
    }

    /// Reads the body up to `max_body`, taking each chunk's bytes from the shared
    /// unverified budget as it arrives (so a trickled body holds only what it has sent).
    async fn read_body<B>(&self, body: B, reserved: &mut Reserved<'_>) -> Result<Bytes, Refusal>
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let mut body = std::pin::pin!(body);
        let mut chunks: Vec<Bytes> = Vec::new();
        let mut len = 0;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else {
                return Err(refuse(
                    StatusCode::BAD_REQUEST,
                    "body_read",
                    r#"{"error":"the body could not be read"}"#,
                ));
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            len += data.len();
            if len > self.max_body {
                return Err(too_large());
            }
            if !reserved.take(data.len()) {
                return Err(Refusal {
                    retry_after: Some(BUDGET_RETRY_AFTER),
                    ..refuse(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "unverified_budget",
                        r#"{"error":"too many webhooks arriving at once; try again later"}"#,
                    )
                });
            }
            chunks.push(data);
        }
        Ok(match chunks.len() {
            0 => Bytes::new(),
            1 => chunks.swap_remove(0),
            _ => Bytes::from(chunks.concat()),
        })
    }

    /// Where the request came from, as the allow-list and the audit trail see it.
    fn source(&self, peer: SocketAddr, headers: &HeaderMap) -> Source {
        let ip = self.source_ip(peer.ip(), headers);
        if ip == peer.ip() {
            Source {
                addr: peer,
                via: None,
            }
        } else {
            Source {
                addr: SocketAddr::new(ip, 0),
                via: Some(peer),
            }
        }
    }

    /// The address the allow-list judges: the peer, unless the peer is a trusted proxy;
    /// then the right-most `X-Forwarded-For` entry that is not itself a trusted proxy
    /// (entries to its left could have been written by anyone).
    fn source_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let trusted = |ip: &IpAddr| self.trusted_proxies.iter().any(|net| net.contains(ip));
        if !trusted(&peer) {
            return peer;
        }
        let mut source = peer;
        for value in headers.get_all("x-forwarded-for").iter().rev() {
            let Ok(text) = value.to_str() else {
                return source;
            };
            for entry in text.rsplit(',') {
                let Ok(ip) = entry.trim().parse::<IpAddr>() else {
                    return source;
                };
                source = ip;
                if !trusted(&ip) {
                    return ip;
                }
            }
        }
        source
    }
}

fn too_large() -> Refusal {
    refuse(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        r#"{"error":"body too large"}"#,
    )
}

/// The provider's headers as they arrived, minus hop-by-hop, what the sidecar sets, and
/// a header holding a secret.
fn forwarded(headers: &HeaderMap, secret: Option<&HeaderName>) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(name, _)| !NOT_FORWARDED.contains(&name.as_str()) && Some(*name) != secret)
        .filter_map(|(name, value)| {
            Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
        })
        .collect()
}

fn json(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    json_response(status, Bytes::from_static(body.as_bytes()))
}

/// A JSON response: the listener's short answers and the admin routes' bodies.
pub(crate) fn json_response(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use std::{convert::Infallible, time::Duration};

    use fincode_store::SqliteStore;
    use futures_util::StreamExt as _;
    use http_body_util::StreamBody;
    use hyper::body::Frame;
    use prometheus_client::registry::Registry;
    use secrecy::SecretString;

    use super::*;
    use crate::verify::{Algorithm, Encoding, Scheme};

    fn listener(dir: &tempfile::TempDir) -> Listener {
        Listener {
            paths: vec!["/webhooks/fincode".to_owned()],
            max_body: 1024,
            body_read_timeout: Duration::from_secs(10),
            unverified: Arc::new(Semaphore::new(4096)),
            allow_ips: Vec::new(),
            trusted_proxies: Vec::new(),
            verifier: Verifier::new(
                Scheme::Hmac {
                    algorithm: Algorithm::Sha256,
                    encoding: Encoding::Hex,
                    header: http::HeaderName::from_static("x-fincode-signature"),
                    prefix: String::new(),
                },
                vec![SecretString::from("secret")],
                Duration::from_mins(5),
            )
            .unwrap(),
            secret_header: None,
            dedupe: KeyTemplate::parse("{Reference}").unwrap(),
            order: None,
            store: Arc::new(SqliteStore::open(&dir.path().join("events.db")).unwrap()),
            metrics: WebhookMetrics::register(&mut Registry::default()),
            wake: Arc::new(Notify::new()),
            audit: Audit::default(),
            clock: Clock::following_tokio(),
        }
    }

    /// What a fresh [`listener`] answers to `body` posted to its path from loopback.
    async fn status_of_post<B>(body: B) -> StatusCode
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let dir = tempfile::tempdir().unwrap();
        let request = Request::post("/webhooks/fincode").body(body).unwrap();
        listener(&dir)
            .handle(request, "127.0.0.1:9".parse().unwrap())
            .await
            .status()
    }

    /// `received_at` comes from the clock the dispatcher reads due times and ages from,
    /// not from another one.
    #[tokio::test(start_paused = true)]
    async fn received_at_is_read_from_the_shared_clock() {
        let dir = tempfile::tempdir().unwrap();
        let listener = listener(&dir);
        tokio::time::advance(Duration::from_hours(2)).await;
        let body = Bytes::from_static(br#"{"Reference":"PCN-CLOCK","Status":"PAID"}"#);
        let signature = crate::verify::sign(
            &listener.verifier.scheme().clone(),
            &SecretString::from("secret"),
            &body,
            listener.clock.now(),
            "m",
        )
        .unwrap();
        let mut request = Request::post("/webhooks/fincode")
            .body(Full::new(body))
            .unwrap();
        request.headers_mut().extend(signature);
        let before = listener.clock.now();
        let response = listener
            .handle(request, "127.0.0.1:9".parse().unwrap())
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        let stored = listener.store.get(1).await.unwrap().unwrap();
        let after = listener.clock.now();
        // The store keeps whole milliseconds.
        let before = before - Duration::from_millis(1);
        assert!(
            before <= stored.received_at && stored.received_at <= after,
            "{:?} not within the shared clock's {before:?}..{after:?}",
            stored.received_at
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_never_finishes_gets_408_instead_of_holding_the_connection() {
        let stalled = StreamBody::new(futures_util::stream::pending::<
            Result<Frame<Bytes>, Infallible>,
        >());
        assert_eq!(status_of_post(stalled).await, StatusCode::REQUEST_TIMEOUT);
    }

    #[tokio::test]
    async fn a_chunked_body_over_the_limit_is_413_however_it_is_sent() {
        let chunks = futures_util::stream::iter(
            (0..8).map(|_| Ok::<_, Infallible>(Frame::data(Bytes::from(vec![b'x'; 200])))),
        );
        assert_eq!(
            status_of_post(StreamBody::new(chunks)).await,
            StatusCode::PAYLOAD_TOO_LARGE
        );
    }

    #[tokio::test]
    async fn unverified_bodies_share_one_budget_and_over_it_get_503_with_retry_after() {
        let dir = tempfile::tempdir().unwrap();
        let mut listener = listener(&dir);
        listener.unverified = Arc::new(Semaphore::new(1500));
        let peer = "127.0.0.1:9".parse().unwrap();
        let stalled_after = |bytes: usize| {
            let chunks = futures_util::stream::iter([Ok::<_, Infallible>(Frame::data(
                Bytes::from(vec![b'x'; bytes]),
            ))])
            .chain(futures_util::stream::pending());
            Request::post("/webhooks/fincode")
                .body(StreamBody::new(chunks))
                .unwrap()
        };

        // A trickling sender holds the 1000 bytes it has sent...
        let mut first = Box::pin(listener.handle(stalled_after(1000), peer));
        assert!(
            tokio::time::timeout(Duration::from_millis(50), first.as_mut())
                .await
                .is_err()
        );
        // ...so another 1000 would go over: 503, come back later.
        let second = listener.handle(stalled_after(1000), peer).await;
        assert_eq!(second.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(second.headers()[header::RETRY_AFTER], "1");

        // Once the first is gone its bytes are free again.
        drop(first);
        let third = listener
            .handle(
                Request::post("/webhooks/fincode")
                    .body(Full::new(Bytes::from(vec![b'x'; 1000])))
                    .unwrap(),
                peer,
            )
            .await;
        assert_eq!(
            third.status(),
            StatusCode::UNAUTHORIZED,
            "read, then refused as unsigned"
        );
        assert_eq!(listener.unverified.available_permits(), 1500);
    }
}
