//! The admin listener: `/healthz` (the process is alive), `/readyz` (the sidecar can
//! serve traffic now) and `/metrics` (Prometheus), read-only, for Kubernetes probes and
//! Prometheus; and, with webhooks on, `/webhooks/...` to list and replay events (loopback
//! or the admin token only, see `fincode_webhooks::admin`).

use std::{
    fmt::Write as _,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use axum::{Router, extract::State, routing::get};
use bytes::Bytes;
use fincode_auth::{AuthFailure, Credentials};
use fincode_proxy::breaker::{Breaker, State as BreakerState};
use fincode_server::{CancellationToken, Server};
use fincode_store::{EventStore, Health};
use fincode_telemetry::{METRICS_CONTENT_TYPE, Metrics};
use fincode_webhooks::admin::Admin as WebhookAdmin;
use http::{Method, Response, StatusCode, header};
use http_body_util::Full;
use tokio::net::TcpListener;

/// Whether the sidecar should receive traffic. Starts not ready; becomes ready once
/// every listener is bound and a first FinCode token was obtained (so bad credentials
/// still stop a rollout), and not ready again as soon as shutdown begins, so the kubelet
/// stops routing before connections are drained.
///
/// Between the two, FinCode or auth trouble (an expired token that cannot be renewed, a
/// rejected login, an open circuit) never fails readiness: that would take every pod of
/// the merchant's app out of its Service during a FinCode outage, not just payments. It
/// is listed in the body instead, beside the metrics and alerts that page about it.
///
/// A dead webhook store (its writer thread gone, or every call failing) is the exception:
/// the pod then answers every webhook 503, so it is not ready, and another replica (or
/// FinCode's redelivery after a restart) should get the events.
#[derive(Clone, Debug)]
pub(crate) struct Readiness {
    serving: Arc<AtomicBool>,
    credentials: Credentials,
    breaker: Breaker,
    audit: Option<fincode_audit::Auditor>,
    store: Option<Arc<dyn EventStore>>,
}

impl Readiness {
    pub(crate) fn new(
        credentials: Credentials,
        breaker: Breaker,
        audit: Option<fincode_audit::Auditor>,
        store: Option<Arc<dyn EventStore>>,
    ) -> Self {
        Self {
            serving: Arc::default(),
            credentials,
            breaker,
            audit,
            store,
        }
    }

    pub(crate) fn set(&self, ready: bool) {
        self.serving.store(ready, Ordering::Release);
    }

    /// The `/readyz` status and its plain-text body: the verdict on the first line, then
    /// one line per trouble.
    fn check(&self) -> (StatusCode, String) {
        if !self.serving.load(Ordering::Acquire) {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: starting or shutting down\n".to_owned(),
            );
        }
        if let Some(Health::Unhealthy(why)) = self.store.as_ref().map(|store| store.health()) {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: webhook store: {why}\n"),
            );
        }
        let auth = self.credentials.status();
        if !auth.had_token {
            let cause = auth.trouble.unwrap_or(AuthFailure::Pending);
            let mut body = format!("not ready: no FinCode token yet: {cause}\n");
            if auth.rejected {
                body.push_str(&retry_line(auth.next_attempt_in));
            }
            return (StatusCode::SERVICE_UNAVAILABLE, body);
        }
        let mut body = String::from("ready\n");
        // Writing to a String cannot fail.
        let _ = match (&auth.trouble, auth.token_valid) {
            (Some(cause), true) => {
                writeln!(body, "auth: token still valid, renewal failing: {cause}")
            }
            (Some(cause), false) => writeln!(
                body,
                "auth: no valid FinCode token (token expired, renewal failing; requests get 503 auth_failed): {cause}"
            ),
            (None, false) => writeln!(body, "auth: token expired, renewal in progress"),
            (None, true) => Ok(()),
        };
        if auth.rejected {
            body.push_str(&retry_line(auth.next_attempt_in));
        }
        match self.breaker.state() {
            BreakerState::Closed => {}
            BreakerState::Open => {
                body.push_str("fincode: circuit open (requests fail fast with 503 circuit_open)\n");
            }
            BreakerState::HalfOpen => {
                body.push_str("fincode: circuit half-open (probing FinCode)\n");
            }
        }
        // Local trouble, listed like the rest: failing readiness would take the app's pod
        // out of its Service for something only the operator can fix.
        if let Some(audit) = self.audit.as_ref().filter(|audit| !audit.is_available()) {
            body.push_str(if audit.fail_closed() {
                "audit: the trail cannot be written (requests get 503 audit_unavailable)\n"
            } else {
                "audit: the trail cannot be written (records are lost and counted)\n"
            });
        }
        (StatusCode::OK, body)
    }
}

/// When a rejected login is tried again.
fn retry_line(next_attempt_in: Option<std::time::Duration>) -> String {
    let when = next_attempt_in.map_or_else(
        || "soon".to_owned(),
        |wait| format!("in {}s", wait.as_secs()),
    );
    format!(
        "auth: login rejected; next attempt {when} (auth.login_retry_after_rejection) or on restart with new credentials\n"
    )
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
    // Probes answer at once; nothing to drain beyond a second.
    server
        .serve(
            listener,
            router(readiness, metrics, webhooks),
            shutdown,
            ADMIN_DRAIN,
        )
        .await;
}

/// How long admin requests in flight may run once the admin port closes (last).
const ADMIN_DRAIN: std::time::Duration = std::time::Duration::from_secs(1);

/// The admin routes: the probes and metrics (`GET` or `HEAD` only), and the webhook
/// routes under `/webhooks/` when webhooks are on.
fn router(readiness: Readiness, metrics: Metrics, webhooks: Option<WebhookAdmin>) -> Router {
    let probes = Router::new()
        .route("/healthz", get(healthz).fallback(not_found))
        .route("/readyz", get(readyz).fallback(not_found))
        .route("/metrics", get(render_metrics).fallback(not_found))
        .fallback(not_found)
        .with_state(Probes { readiness, metrics });
    match webhooks {
        Some(webhooks) => probes.merge(webhooks.router()),
        None => probes,
    }
}

/// What the probe routes read.
#[derive(Clone)]
struct Probes {
    readiness: Readiness,
    metrics: Metrics,
}

async fn healthz() -> Response<Full<Bytes>> {
    text(StatusCode::OK, "ok\n")
}

async fn readyz(State(probes): State<Probes>) -> Response<Full<Bytes>> {
    let (status, body) = probes.readiness.check();
    text(status, body)
}

async fn render_metrics(State(probes): State<Probes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(probes.metrics.render())));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static(METRICS_CONTENT_TYPE),
    );
    response
}

/// Any other path, or a method other than `GET` and `HEAD` anywhere: the method is
/// refused first, as the probes are read-only.
async fn not_found(method: Method) -> Response<Full<Bytes>> {
    if method != Method::GET && method != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    text(
        StatusCode::NOT_FOUND,
        "not found: try /healthz, /readyz or /metrics\n",
    )
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
#[path = "admin_tests.rs"]
mod tests;
