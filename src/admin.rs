//! The admin listener: `/healthz` (the process is alive), `/readyz` (the sidecar can
//! serve traffic now) and `/metrics` (Prometheus), read-only, for Kubernetes probes and
//! Prometheus; and, with webhooks on, `/webhooks/...` to list and replay events (loopback
//! or the admin token only, see `fincode_webhooks::admin`).

use std::{
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use bytes::Bytes;
use fincode_auth::Credentials;
use fincode_server::{CancellationToken, Peer, Server};
use fincode_telemetry::{METRICS_CONTENT_TYPE, Metrics};
use fincode_webhooks::admin::Admin as WebhookAdmin;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::net::TcpListener;

/// Whether the sidecar should receive traffic. Starts not ready; becomes ready once
/// every listener is bound and a FinCode token is held, and not ready again as soon as
/// shutdown begins, so the kubelet stops routing before connections are drained.
#[derive(Clone, Debug)]
pub(crate) struct Readiness {
    serving: Arc<AtomicBool>,
    credentials: Credentials,
}

impl Readiness {
    pub(crate) fn new(credentials: Credentials) -> Self {
        Self {
            serving: Arc::default(),
            credentials,
        }
    }

    pub(crate) fn set(&self, ready: bool) {
        self.serving.store(ready, Ordering::Release);
    }

    /// `Err` names what is missing.
    fn check(&self) -> Result<(), &'static str> {
        if !self.serving.load(Ordering::Acquire) {
            return Err("not ready: starting or shutting down\n");
        }
        if !self.credentials.is_ready() {
            return Err("not ready: no FinCode token yet (login pending or failing)\n");
        }
        Ok(())
    }
}

/// Serves the admin routes with `server`'s limits (`[listeners.admin]`) until `shutdown`
/// is cancelled. The peer (loopback or not) decides access to the webhook routes.
pub(crate) async fn serve(
    server: Server,
    listener: TcpListener,
    readiness: Readiness,
    metrics: Metrics,
    webhooks: Option<WebhookAdmin>,
    shutdown: CancellationToken,
) {
    let service = tower::service_fn(move |req: Request<Incoming>| {
        let (readiness, metrics, webhooks) = (readiness.clone(), metrics.clone(), webhooks.clone());
        async move {
            if let (Some(webhooks), Some(Peer(peer))) =
                (&webhooks, req.extensions().get::<Peer>().copied())
            {
                let answer = webhooks
                    .handle(
                        req.method(),
                        req.uri().path(),
                        req.uri().query(),
                        req.headers(),
                        peer,
                    )
                    .await;
                if let Some(answer) = answer {
                    return Ok::<_, Infallible>(answer);
                }
            }
            Ok(route(&req, &readiness, &metrics))
        }
    });
    // Probes answer at once; nothing to drain beyond a second.
    server.serve(listener, service, shutdown, ADMIN_DRAIN).await;
}

/// How long admin requests in flight may run once the admin port closes (last).
const ADMIN_DRAIN: std::time::Duration = std::time::Duration::from_secs(1);

fn route(
    req: &Request<Incoming>,
    readiness: &Readiness,
    metrics: &Metrics,
) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => match readiness.check() {
            Ok(()) => text(StatusCode::OK, "ready\n"),
            Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, why),
        },
        "/metrics" => {
            let mut response = Response::new(Full::new(Bytes::from(metrics.render())));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                http::HeaderValue::from_static(METRICS_CONTENT_TYPE),
            );
            response
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /healthz, /readyz or /metrics\n",
        ),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
