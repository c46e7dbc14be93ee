//! The admin API for webhook events, served on the admin port. Reading and replaying
//! events is an operator's act: allowed from loopback, or with the admin token
//! (`Authorization: Bearer ...`, compared in constant time) from anywhere else.
//!
//! - `GET  /webhooks/events[?status=pending|delivered|dead][&limit=N]`: newest first.
//! - `GET  /webhooks/events/{id}`: one event, its body passed through the redactor.
//! - `POST /webhooks/events/{id}/replay`: due again now, attempts reset.
//! - `POST /webhooks/dead/replay`: every dead letter.
//!
//! The POST routes change state, so loopback alone is not enough for them: they need the
//! token, or from loopback the [`ADMIN_HEADER`] (no browser can be made to send it).
//! Loopback admits nothing when the request names a host or origin that is not loopback:
//! that is a web page reaching a port-forward by DNS rebinding or cross-site.
//!
//! Every replay asked for is an `admin.replay` audit record: who (the peer, and whether
//! the token or loopback admitted it), what, and the answer; refused ones too.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use axum::{
    Router,
    extract::{FromRequestParts, Path, Query, State, rejection::QueryRejection},
    routing::{any, get, post},
};
use bytes::Bytes;
use fincode_audit::Auditor;
use fincode_redact::Redactor;
use fincode_server::Peer;
use fincode_store::{EventStore, Status, StoredEvent};
use http::{HeaderMap, Method, Response, StatusCode, header, request::Parts};
use http_body_util::Full;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use tokio::sync::Notify;

use crate::{
    audit::{AdmittedBy, Audit, Caller, Replay, ReplayAnswer},
    dispatcher::Clock,
    keys::hex,
    listener::json_response,
};

/// The header that, from loopback, admits a state-changing request without the token. A
/// CORS "simple" request cannot carry it, so a web page in an operator's browser (behind a
/// `kubectl port-forward`) cannot send it cross-origin without a preflight, which this port
/// never answers.
pub const ADMIN_HEADER: &str = "x-fincode-admin";

/// The largest `limit` a list may ask for.
const MAX_LIST: usize = 1000;

/// The webhook routes of the admin port.
#[derive(Debug, Clone)]
pub struct Admin {
    store: Arc<dyn EventStore>,
    redactor: Redactor,
    token: Option<Arc<SecretString>>,
    wake: Arc<Notify>,
    audit: Audit,
    clock: Clock,
}

// === impl Admin ===

impl Admin {
    /// Routes over `store`; `token` admits callers beyond loopback; `wake` starts the
    /// dispatcher on a replayed event at once; `audit` records every replay asked for,
    /// refused or done; `clock` (the dispatcher's) says when a replayed event is due.
    pub fn new(
        store: Arc<dyn EventStore>,
        redactor: Redactor,
        token: Option<SecretString>,
        wake: Arc<Notify>,
        audit: Option<Auditor>,
        clock: Clock,
    ) -> Self {
        Self {
            store,
            redactor,
            token: token.map(Arc::new),
            wake,
            audit: Audit::new(audit),
            clock,
        }
    }

    /// The webhook routes, for the admin port's router: every path under `/webhooks/`
    /// is answered here, anything else is left to the router they are merged into.
    ///
    /// Who may ask is decided before what is asked (a refused caller learns nothing of
    /// the routes, ids or parameters), so each handler admits the caller first, and the
    /// extractors that could reject (the list's query) are read after that. A method a
    /// route does not serve, `HEAD` included, is a 404 like an unknown path.
    pub fn router<S>(self) -> Router<S> {
        Router::new()
            .route(
                "/webhooks/events",
                get(list).head(no_such_route).fallback(no_such_route),
            )
            .route(
                "/webhooks/events/{id}",
                get(show).head(no_such_route).fallback(no_such_route),
            )
            .route(
                "/webhooks/events/{id}/replay",
                post(replay).fallback(no_such_route),
            )
            .route(
                "/webhooks/dead/replay",
                post(replay_all).fallback(no_such_route),
            )
            .route("/webhooks/", any(no_such_route))
            .route("/webhooks/{*rest}", any(no_such_route))
            .with_state(self)
    }

    /// Admits the caller of a request, or says why not, for the 403 answer (recording a
    /// refused `replay`). Reading is allowed from loopback; changing state needs the
    /// token, or from loopback the [`ADMIN_HEADER`].
    fn admit(
        &self,
        method: &Method,
        headers: &HeaderMap,
        peer: SocketAddr,
        replay: Option<Replay>,
    ) -> Result<Caller, &'static str> {
        let mut caller = Caller {
            peer,
            admitted: None,
        };
        let token = self.has_token(headers);
        if !(token || loopback_tool(headers, peer)) {
            if let Some(replay) = replay {
                self.refused(caller, replay, headers);
            }
            return Err(
                "webhook admin routes are served on loopback (to a loopback Host, not from a web page elsewhere), or with webhooks.admin_token_env's token as a Bearer token",
            );
        }
        // Reading is safe from loopback; changing state is not, because a web page in an
        // operator's browser can make a "simple" cross-origin POST to a port-forwarded
        // admin port. Such a page cannot add a custom header without a CORS preflight,
        // which this port never answers; the token needs no such help.
        if !matches!(*method, Method::GET | Method::HEAD)
            && !token
            && !headers.contains_key(ADMIN_HEADER)
        {
            if let Some(replay) = replay {
                self.refused(caller, replay, headers);
            }
            return Err(
                "state-changing webhook admin routes need the admin token as a Bearer token, or from loopback the header X-Fincode-Admin: 1 (fincode-sidecar webhooks sends it)",
            );
        }
        caller.admitted = Some(if token {
            AdmittedBy::Token
        } else {
            AdmittedBy::Loopback
        });
        Ok(caller)
    }

    /// The answer to an admitted request: `answer`'s, or 503 when the store failed
    /// (recording the failed `replay`).
    fn answer(
        &self,
        answer: Result<Response<Full<Bytes>>, fincode_store::StoreError>,
        caller: Caller,
        replay: Option<Replay>,
    ) -> Response<Full<Bytes>> {
        answer.unwrap_or_else(|error| {
            tracing::error!(%error, "webhook admin request failed");
            if let Some(replay) = replay {
                self.audit.admin_replay(
                    caller,
                    replay,
                    ReplayAnswer {
                        status: StatusCode::SERVICE_UNAVAILABLE.as_u16(),
                        error: Some("store_unavailable"),
                        count: None,
                    },
                );
            }
            reply(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({"error": "the webhook store is unavailable"}),
            )
        })
    }

    /// Records a replay refused with 403: `unauthorized` when a Bearer token was given
    /// and is not the admin token (a guess at the credential), `forbidden` otherwise
    /// (nothing that could admit it was offered).
    fn refused(&self, caller: Caller, replay: Replay, headers: &HeaderMap) {
        let error = if bearer(headers).is_some() {
            "unauthorized"
        } else {
            "forbidden"
        };
        self.audit.admin_replay(
            caller,
            replay,
            ReplayAnswer {
                status: StatusCode::FORBIDDEN.as_u16(),
                error: Some(error),
                count: None,
            },
        );
    }

    /// Whether the request carries the admin token (compared in constant time).
    fn has_token(&self, headers: &HeaderMap) -> bool {
        let (Some(token), Some(given)) = (&self.token, bearer(headers)) else {
            return false;
        };
        bool::from(token.expose_secret().as_bytes().ct_eq(given.as_bytes()))
    }

    async fn list(
        &self,
        query: Result<Query<ListQuery>, QueryRejection>,
    ) -> Result<Response<Full<Bytes>>, fincode_store::StoreError> {
        let Ok(Query(query)) = query else {
            return Ok(reply(
                StatusCode::BAD_REQUEST,
                &json!({"error": "known parameters: status, limit"}),
            ));
        };
        let status = match query.status.as_deref().map(Status::parse) {
            None => None,
            Some(Some(parsed)) => Some(parsed),
            Some(None) => {
                return Ok(reply(
                    StatusCode::BAD_REQUEST,
                    &json!({"error": "status must be pending, delivered or dead"}),
                ));
            }
        };
        let limit = match query.limit.as_deref().map(str::parse::<usize>) {
            None => 100,
            Some(Ok(n)) if (1..=MAX_LIST).contains(&n) => n,
            Some(_) => {
                return Ok(reply(
                    StatusCode::BAD_REQUEST,
                    &json!({"error": format!("limit must be 1 to {MAX_LIST}")}),
                ));
            }
        };
        let events = self.store.list(status, limit).await?;
        let events: Vec<Value> = events.iter().map(summary).collect();
        Ok(reply(StatusCode::OK, &json!({ "events": events })))
    }

    async fn show(&self, id: &str) -> Result<Response<Full<Bytes>>, fincode_store::StoreError> {
        let Ok(id) = id.parse() else {
            return Ok(bad_id());
        };
        let Some(event) = self.store.get(id).await? else {
            return Ok(reply(
                StatusCode::NOT_FOUND,
                &json!({"error": "no such event"}),
            ));
        };
        let mut shown = summary(&event);
        let body = self.redactor.json(&event.body);
        shown["body"] = serde_json::from_str(&body).unwrap_or(Value::String(body));
        shown["headers"] = event
            .headers
            .iter()
            .map(|(name, value)| {
                let value = if self.redactor.is_sensitive_header(name) {
                    fincode_redact::REDACTED.to_owned()
                } else {
                    self.redactor.text(value).into_owned()
                };
                json!([name, value])
            })
            .collect();
        Ok(reply(StatusCode::OK, &shown))
    }

    async fn replay(
        &self,
        id: &str,
        caller: Caller,
    ) -> Result<Response<Full<Bytes>>, fincode_store::StoreError> {
        let answer = |status: StatusCode, error| ReplayAnswer {
            status: status.as_u16(),
            error,
            count: None,
        };
        let Ok(id) = id.parse() else {
            self.audit.admin_replay(
                caller,
                Replay::One(None),
                answer(StatusCode::BAD_REQUEST, Some("bad_id")),
            );
            return Ok(bad_id());
        };
        let replay = Replay::One(Some(id));
        if !self.store.replay(id, self.clock.now()).await? {
            self.audit.admin_replay(
                caller,
                replay,
                answer(StatusCode::NOT_FOUND, Some("not_found")),
            );
            return Ok(reply(
                StatusCode::NOT_FOUND,
                &json!({"error": "no such event"}),
            ));
        }
        tracing::info!(target: "fincode_sidecar::webhooks", id, "webhook replay requested");
        self.audit.admin_replay(
            caller,
            replay,
            ReplayAnswer {
                count: Some(1),
                ..answer(StatusCode::OK, None)
            },
        );
        self.audit.replayed(replay, 1);
        self.wake.notify_one();
        Ok(reply(StatusCode::OK, &json!({"replayed": 1})))
    }

    async fn replay_all(
        &self,
        caller: Caller,
    ) -> Result<Response<Full<Bytes>>, fincode_store::StoreError> {
        let replayed = self.store.replay_all_dead(self.clock.now()).await?;
        tracing::info!(target: "fincode_sidecar::webhooks", replayed, "dead letters replayed");
        self.audit.admin_replay(
            caller,
            Replay::Dead,
            ReplayAnswer {
                status: StatusCode::OK.as_u16(),
                error: None,
                count: Some(replayed),
            },
        );
        if replayed > 0 {
            self.audit.replayed(Replay::Dead, replayed);
        }
        self.wake.notify_one();
        Ok(reply(StatusCode::OK, &json!({ "replayed": replayed })))
    }
}

/// `GET /webhooks/events[?status=...][&limit=N]`'s parameters; any other is refused.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    status: Option<String>,
    limit: Option<String>,
}

/// What [`Admin::admit`] decides on: who sent the request and how. Every handler takes
/// it first, so no extractor that could reject runs before the caller is admitted.
struct Asker {
    peer: SocketAddr,
    method: Method,
    headers: HeaderMap,
}

impl<S: Sync> FromRequestParts<S> for Asker {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Infallible> {
        // A request from outside the admin server (none is) counts as from elsewhere.
        let peer = parts
            .extensions
            .get::<Peer>()
            .map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |Peer(peer)| *peer);
        Ok(Self {
            peer,
            method: parts.method.clone(),
            headers: parts.headers.clone(),
        })
    }
}

/// The answer to `asker`'s request for `asked` (a replay, or `None` for a read): what
/// `serve` makes of it once the caller is admitted, 403 otherwise.
async fn admitted<F>(
    admin: &Admin,
    asker: Asker,
    asked: Option<Replay>,
    serve: impl FnOnce(Caller) -> F,
) -> Response<Full<Bytes>>
where
    F: Future<Output = Result<Response<Full<Bytes>>, fincode_store::StoreError>>,
{
    match admin.admit(&asker.method, &asker.headers, asker.peer, asked) {
        Ok(caller) => admin.answer(serve(caller).await, caller, asked),
        Err(why) => forbidden(why),
    }
}

async fn list(
    State(admin): State<Admin>,
    asker: Asker,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Response<Full<Bytes>> {
    admitted(&admin, asker, None, |_| admin.list(query)).await
}

async fn show(
    State(admin): State<Admin>,
    asker: Asker,
    Path(id): Path<String>,
) -> Response<Full<Bytes>> {
    admitted(&admin, asker, None, |_| admin.show(&id)).await
}

async fn replay(
    State(admin): State<Admin>,
    asker: Asker,
    Path(id): Path<String>,
) -> Response<Full<Bytes>> {
    let asked = Replay::One(id.parse().ok());
    admitted(&admin, asker, Some(asked), |caller| {
        admin.replay(&id, caller)
    })
    .await
}

async fn replay_all(State(admin): State<Admin>, asker: Asker) -> Response<Full<Bytes>> {
    admitted(&admin, asker, Some(Replay::Dead), |caller| {
        admin.replay_all(caller)
    })
    .await
}

/// Any other path under `/webhooks/`, or a method its route does not serve: 404 to an
/// admitted caller.
async fn no_such_route(State(admin): State<Admin>, asker: Asker) -> Response<Full<Bytes>> {
    admitted(&admin, asker, None, |_| async {
        Ok(reply(
            StatusCode::NOT_FOUND,
            &json!({"error": "no such webhook route"}),
        ))
    })
    .await
}

/// The Bearer token a request carries, if any.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

/// Whether loopback admits the request: it comes from loopback, and not from a web page
/// elsewhere.
fn loopback_tool(headers: &HeaderMap, peer: SocketAddr) -> bool {
    peer.ip().is_loopback() && !from_a_browser_elsewhere(headers)
}

/// Whether a loopback request was made by a web page that is not itself on loopback.
///
/// Loopback is where `kubectl port-forward` and the CLI come from, but a page in the
/// operator's browser can reach it too: by DNS rebinding (evil.example re-resolved to
/// 127.0.0.1 is same-origin with itself, so it may send custom headers and read answers)
/// or by a plain cross-site request. Browsers always send `Host` (the page's host name)
/// and, from `fetch()`, `Origin` and `Sec-Fetch-Site`; none of them can be forged by the
/// page. Tools send a loopback `Host` and no `Origin`.
fn from_a_browser_elsewhere(headers: &HeaderMap) -> bool {
    let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let host_is_loopback = |host: &str| {
        let host = host.trim();
        let name = match host.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or_default(),
            None => host.rsplit_once(':').map_or(host, |(name, _port)| name),
        };
        name.eq_ignore_ascii_case("localhost")
            || name
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    };
    if headers.contains_key(header::HOST)
        && !header(header::HOST.as_str()).is_some_and(host_is_loopback)
    {
        return true;
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let loopback_origin = origin
            .to_str()
            .ok()
            .and_then(|origin| origin.split_once("://"))
            .is_some_and(|(_scheme, host)| host_is_loopback(host));
        if !loopback_origin {
            return true;
        }
    }
    header("sec-fetch-site").is_some_and(|site| site.eq_ignore_ascii_case("cross-site"))
}

/// What a list shows of an event: no body, no headers (they may hold personal data).
fn summary(event: &StoredEvent) -> Value {
    json!({
        "id": event.id,
        "status": event.status.as_str(),
        "attempts": event.attempts,
        "received_at": millis(event.received_at),
        "next_attempt_at": millis(event.next_attempt_at),
        "correlation_id": event.correlation_id,
        "dedupe_key_hash": short_hash(&event.dedupe_key),
        "last_error": event.last_error,
    })
}

/// Dedupe keys hold references; the list shows a stable short digest instead.
fn short_hash(text: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(text.as_bytes());
    hex(&digest[..8])
}

fn millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A caller [`Admin::admit`] refused, told `why`.
fn forbidden(why: &str) -> Response<Full<Bytes>> {
    reply(StatusCode::FORBIDDEN, &json!({ "error": why }))
}

fn bad_id() -> Response<Full<Bytes>> {
    reply(
        StatusCode::BAD_REQUEST,
        &json!({"error": "an event id is a number, as `webhooks list` shows"}),
    )
}

fn reply(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    json_response(status, Bytes::from(body.to_string()))
}

/// Drives [`Admin::router`] as the admin port does, for the tests.
#[cfg(test)]
impl Admin {
    /// The answer to a request from `peer`, or `None` when no webhook route claims it
    /// (the router it is merged into answers then).
    pub(crate) async fn handle(
        &self,
        method: &Method,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
        peer: SocketAddr,
    ) -> Option<Response<axum::body::Body>> {
        use tower::ServiceExt;

        /// What the merged router's own fallback answers: not a webhook route.
        const NOT_OURS: StatusCode = StatusCode::IM_A_TEAPOT;
        let uri = match query {
            Some(query) => format!("{path}?{query}"),
            None => path.to_owned(),
        };
        let mut request = http::Request::builder()
            .method(method.clone())
            .uri(uri)
            .body(axum::body::Body::empty())
            .ok()?;
        *request.headers_mut() = headers.clone();
        request.extensions_mut().insert(Peer(peer));
        let router = self.clone().router().fallback(|| async { NOT_OURS });
        let response = router.oneshot(request).await.ok()?;
        (response.status() != NOT_OURS).then_some(response)
    }
}

#[cfg(test)]
mod tests {
    use fincode_store::SqliteStore;
    use http::HeaderValue;

    use super::*;

    fn admin(dir: &tempfile::TempDir, token: Option<&str>) -> Admin {
        let store = Arc::new(SqliteStore::open(&dir.path().join("events.db")).unwrap());
        Admin::new(
            store,
            Redactor::default(),
            token.map(|t| SecretString::from(t.to_owned())),
            Arc::new(Notify::new()),
            None,
            Clock::new(),
        )
    }

    fn header_map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| {
                (
                    http::HeaderName::from_static(name),
                    HeaderValue::from_static(value),
                )
            })
            .collect()
    }

    async fn status(admin: &Admin, peer: &str, bearer: Option<&str>) -> StatusCode {
        let mut headers = HeaderMap::new();
        if let Some(bearer) = bearer {
            headers.insert(
                header::AUTHORIZATION,
                HeaderValue::from_str(&format!("Bearer {bearer}")).unwrap(),
            );
        }
        admin
            .handle(
                &Method::GET,
                "/webhooks/events",
                None,
                &headers,
                peer.parse().unwrap(),
            )
            .await
            .unwrap()
            .status()
    }

    #[tokio::test]
    async fn loopback_or_the_token_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let open = admin(&dir, None);
        assert_eq!(status(&open, "127.0.0.1:5000", None).await, StatusCode::OK);
        assert_eq!(status(&open, "[::1]:5000", None).await, StatusCode::OK);
        assert_eq!(
            status(&open, "10.0.0.7:5000", None).await,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            status(&open, "10.0.0.7:5000", Some("anything")).await,
            StatusCode::FORBIDDEN,
            "no token configured: loopback only"
        );
        drop(open);

        let dir = tempfile::tempdir().unwrap();
        let guarded = admin(&dir, Some("s3cret-admin-token"));
        assert_eq!(
            status(&guarded, "10.0.0.7:5000", Some("s3cret-admin-token")).await,
            StatusCode::OK
        );
        assert_eq!(
            status(&guarded, "10.0.0.7:5000", Some("s3cret-admin-tokeN")).await,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            status(&guarded, "10.0.0.7:5000", None).await,
            StatusCode::FORBIDDEN
        );
    }

    #[tokio::test]
    async fn bad_parameters_and_ids_are_400_and_unknown_routes_404() {
        let dir = tempfile::tempdir().unwrap();
        let admin = admin(&dir, None);
        let peer = "127.0.0.1:1".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(ADMIN_HEADER, HeaderValue::from_static("1"));
        let call = |method: Method, path: &'static str, query: Option<&'static str>| {
            let (admin, headers) = (&admin, &headers);
            async move {
                admin
                    .handle(&method, path, query, headers, peer)
                    .await
                    .map(|r| r.status())
            }
        };
        let bad = Some(StatusCode::BAD_REQUEST);
        assert_eq!(
            call(Method::GET, "/webhooks/events", Some("status=lost")).await,
            bad
        );
        assert_eq!(
            call(Method::GET, "/webhooks/events", Some("limit=0")).await,
            bad
        );
        assert_eq!(
            call(Method::GET, "/webhooks/events", Some("page=2")).await,
            bad
        );
        assert_eq!(call(Method::GET, "/webhooks/events/abc", None).await, bad);
        assert_eq!(
            call(Method::GET, "/webhooks/events/42", None).await,
            Some(StatusCode::NOT_FOUND)
        );
        assert_eq!(
            call(Method::POST, "/webhooks/events/42/replay", None).await,
            Some(StatusCode::NOT_FOUND)
        );
        assert_eq!(
            call(Method::DELETE, "/webhooks/events", None).await,
            Some(StatusCode::NOT_FOUND)
        );
        assert_eq!(call(Method::GET, "/metrics", None).await, None, "not ours");
    }

    #[tokio::test]
    async fn a_replay_needs_the_token_or_from_loopback_the_admin_header() {
        let dir = tempfile::tempdir().unwrap();
        let admin = admin(&dir, Some("s3cret-admin-token"));
        let replay = |peer: &'static str, headers: &'static [(&'static str, &'static str)]| {
            let admin = &admin;
            async move {
                let map = header_map(headers);
                let response = admin
                    .handle(
                        &Method::POST,
                        "/webhooks/dead/replay",
                        None,
                        &map,
                        peer.parse().unwrap(),
                    )
                    .await
                    .unwrap();
                let status = response.status();
                let body = http_body_util::BodyExt::collect(response.into_body())
                    .await
                    .unwrap()
                    .to_bytes();
                (status, String::from_utf8_lossy(&body).into_owned())
            }
        };
        // A browser behind a port-forward can send a simple cross-origin POST to loopback;
        // it cannot add a custom header without a preflight (never answered).
        let (status, body) = replay("127.0.0.1:5000", &[]).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(body.contains("X-Fincode-Admin"), "{body}");
        assert_eq!(
            replay("127.0.0.1:5000", &[("x-fincode-admin", "1")])
                .await
                .0,
            StatusCode::OK
        );
        assert_eq!(
            replay(
                "127.0.0.1:5000",
                &[("authorization", "Bearer s3cret-admin-token")]
            )
            .await
            .0,
            StatusCode::OK
        );
        // The header alone is no credential from elsewhere.
        assert_eq!(
            replay("10.0.0.7:5000", &[("x-fincode-admin", "1")]).await.0,
            StatusCode::FORBIDDEN
        );
        // Reading keeps today's rule: loopback is enough.
        assert_eq!(
            status_of_list(&admin, "127.0.0.1:5000").await,
            StatusCode::OK
        );
    }

    async fn status_of_list(admin: &Admin, peer: &str) -> StatusCode {
        status(admin, peer, None).await
    }

    /// DNS rebinding: a page on evil.example, re-resolved to 127.0.0.1, is same-origin with
    /// itself, so it may add custom headers without a preflight; the request arrives from
    /// loopback but names the attacker's host (and, from fetch(), a cross-site origin).
    #[tokio::test]
    async fn loopback_alone_does_not_admit_a_rebound_browser_page() {
        let dir = tempfile::tempdir().unwrap();
        let admin = admin(&dir, Some("s3cret-admin-token"));
        let call =
            |method: Method, path: &'static str, headers: Vec<(&'static str, &'static str)>| {
                let admin = &admin;
                async move {
                    let map = header_map(&headers);
                    admin
                        .handle(&method, path, None, &map, "127.0.0.1:5000".parse().unwrap())
                        .await
                        .unwrap()
                        .status()
                }
            };
        let replay = "/webhooks/dead/replay";
        let list = "/webhooks/events";
        let header = ("x-fincode-admin", "1");
        for refused in [
            vec![("host", "evil.example:9090"), header],
            vec![
                ("host", "127.0.0.1:9090"),
                ("origin", "http://evil.example:9090"),
                header,
            ],
            vec![
                ("host", "localhost:9090"),
                ("sec-fetch-site", "cross-site"),
                header,
            ],
        ] {
            assert_eq!(
                call(Method::POST, replay, refused.clone()).await,
                StatusCode::FORBIDDEN,
                "{refused:?}"
            );
            assert_eq!(
                call(Method::GET, list, refused.clone()).await,
                StatusCode::FORBIDDEN,
                "{refused:?}"
            );
        }
        // curl and the CLI through a port-forward: a loopback host, no browser headers.
        for admitted in [
            vec![("host", "127.0.0.1:9090"), header],
            vec![("host", "localhost"), header],
            vec![("host", "[::1]:9090"), header],
            vec![header],
            vec![
                ("host", "localhost:9090"),
                ("origin", "http://localhost:9090"),
                header,
            ],
        ] {
            assert_eq!(
                call(Method::POST, replay, admitted.clone()).await,
                StatusCode::OK,
                "{admitted:?}"
            );
        }
        // The token admits whatever the host says (it is a credential, not an address).
        assert_eq!(
            call(
                Method::POST,
                replay,
                vec![
                    ("host", "sidecar.internal:9090"),
                    ("authorization", "Bearer s3cret-admin-token")
                ]
            )
            .await,
            StatusCode::OK
        );
    }
}
