//! `/readyz` over a real admin socket, with a real SQLite store behind it: the branch that
//! takes the pod out of its Service when the webhook store cannot serve.
//!
//! Not an end-to-end test of the binary, by necessity: a running sidecar's queue-depth
//! gauge reads the store every second, and in WAL mode those reads succeed whatever
//! stops the writes (a lock, a full disk), so no outside failure of the file keeps every
//! call failing long enough to probe. Here nothing else touches the store, so the
//! failures the test causes are the only operations it sees.
#![allow(clippy::unwrap_used)]

use std::{path::Path, sync::Arc, time::Duration};

use bytes::Bytes;
use fincode_auth::Credentials;
use fincode_config::BreakerConfig;
use fincode_proxy::breaker::Breaker;
use fincode_server::{CancellationToken, Server};
use fincode_store::{EventStore, NewEvent, SqliteStore, UNHEALTHY_AFTER_FAILURES};
use fincode_telemetry::{METRICS_CONTENT_TYPE, Metrics};
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use tokio::net::TcpListener;

use super::{Readiness, serve};

/// An admin port serving `store`'s readiness on loopback; its `/readyz` URL.
async fn admin_port(store: Arc<dyn EventStore>, stop: &CancellationToken) -> String {
    let metrics = Metrics::new();
    let breaker = Breaker::new(
        &BreakerConfig::default(),
        "fincode",
        &mut metrics.registry(),
    );
    let readiness = Readiness::new(Credentials::none(), breaker, None, Some(store));
    readiness.set(true);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/readyz", listener.local_addr().unwrap());
    let limits = fincode_config::ListenersConfig::default().admin;
    tokio::spawn(serve(
        Server::new("admin", &limits),
        listener,
        readiness,
        metrics,
        None,
        stop.clone(),
    ));
    url
}

/// `GET url`: the status and the body.
async fn get(url: &str) -> (u16, String) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let response = client.get(url.parse().unwrap()).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

fn event(key: &str) -> NewEvent {
    NewEvent {
        dedupe_key: key.to_owned(),
        order_key: None,
        correlation_id: "c".to_owned(),
        body: Bytes::from_static(b"{}"),
        headers: Vec::new(),
        received_at: std::time::SystemTime::now(),
    }
}

/// Another process's SQLite connection holding the write lock on the store's file (the
/// `.lock` file is the sidecar's own convention; `sqlite3`, a backup tool or a migration
/// script opens the database directly).
fn hold_write_lock(path: &Path) -> rusqlite::Connection {
    let other = rusqlite::Connection::open(path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    other
}

#[tokio::test]
async fn readyz_is_503_naming_the_store_while_every_write_fails_then_200_once_one_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    let store = Arc::new(SqliteStore::open(&path).unwrap());
    let stop = CancellationToken::new();
    let readyz = admin_port(store.clone(), &stop).await;
    let (status, body) = get(&readyz).await;
    assert_eq!((status, body.as_str()), (200, "ready\n"));

    let other = hold_write_lock(&path);
    // Each insert waits out the store's busy timeout, then fails.
    for attempt in 1..=UNHEALTHY_AFTER_FAILURES {
        let error = store
            .insert(event(&format!("k{attempt}")))
            .await
            .unwrap_err();
        assert!(error.to_string().contains("database is locked"), "{error}");
        let (status, body) = get(&readyz).await;
        if attempt < UNHEALTHY_AFTER_FAILURES {
            // One failure can be one bad command: still ready.
            assert_eq!(status, 200, "after {attempt} failure(s): {body}");
        } else {
            assert_eq!(status, 503, "{body}");
            assert!(
                body.starts_with(
                    "not ready: webhook store: the last 3 webhook store writes failed"
                ),
                "{body}"
            );
            assert!(body.contains("database is locked"), "{body}");
        }
    }

    // Reads still work in WAL mode while writes cannot (the queue-depth gauge reads every
    // second): they must not make a store that stores nothing look ready.
    assert_eq!(store.count_pending().await.unwrap(), 0);
    let (status, body) = get(&readyz).await;
    assert_eq!(
        status, 503,
        "a successful read made the store ready: {body}"
    );

    // The other process lets go: the next write succeeds, and the pod is ready again.
    other.execute_batch("ROLLBACK").unwrap();
    drop(other);
    store.insert(event("after")).await.unwrap();
    let (status, body) = get(&readyz).await;
    assert_eq!((status, body.as_str()), (200, "ready\n"));
    stop.cancel();
}

#[tokio::test]
async fn readyz_is_503_once_the_store_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(&dir.path().join("events.db")).unwrap());
    let stop = CancellationToken::new();
    let readyz = admin_port(store.clone(), &stop).await;
    assert_eq!(get(&readyz).await.0, 200);
    store.close().await;
    let (status, body) = tokio::time::timeout(Duration::from_secs(5), get(&readyz))
        .await
        .unwrap();
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        body,
        "not ready: webhook store: the webhook store is closed\n"
    );
    stop.cancel();
}

/// The probe routes' method and path rules, status codes, bodies and content types, as
/// the admin router answers them (webhooks off: `/webhooks/...` is just another path).
#[tokio::test]
async fn probes_answer_get_and_head_only_and_name_the_routes_elsewhere() {
    use http::{Method, Request};
    use tower::ServiceExt;

    let metrics = Metrics::new();
    let breaker = Breaker::new(
        &BreakerConfig::default(),
        "fincode",
        &mut metrics.registry(),
    );
    let readiness = Readiness::new(Credentials::none(), breaker, None, None);
    readiness.set(true);
    let router = super::router(readiness, metrics, None);
    let call = |method: Method, path: &'static str| {
        let router = router.clone();
        async move {
            let request = Request::builder()
                .method(method)
                .uri(path)
                .body(axum::body::Body::empty())
                .unwrap();
            let response = router.oneshot(request).await.unwrap();
            let status = response.status().as_u16();
            let content_type = response.headers()[http::header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .to_owned();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (
                status,
                content_type,
                String::from_utf8(body.to_vec()).unwrap(),
            )
        }
    };
    let text = "text/plain; charset=utf-8";
    assert_eq!(
        call(Method::GET, "/healthz").await,
        (200, text.to_owned(), "ok\n".to_owned())
    );
    assert_eq!(call(Method::HEAD, "/healthz").await.0, 200);
    assert_eq!(
        call(Method::GET, "/readyz").await,
        (200, text.to_owned(), "ready\n".to_owned())
    );
    let (status, content_type, _) = call(Method::GET, "/metrics").await;
    assert_eq!((status, content_type.as_str()), (200, METRICS_CONTENT_TYPE));
    for (method, path) in [
        (Method::POST, "/healthz"),
        (Method::DELETE, "/readyz"),
        (Method::PUT, "/metrics"),
        (Method::POST, "/elsewhere"),
    ] {
        assert_eq!(
            call(method.clone(), path).await,
            (405, text.to_owned(), "method not allowed\n".to_owned()),
            "{method} {path}"
        );
    }
    for path in ["/elsewhere", "/webhooks/events", "/healthz/"] {
        assert_eq!(
            call(Method::GET, path).await,
            (
                404,
                text.to_owned(),
                "not found: try /healthz, /readyz or /metrics\n".to_owned()
            ),
            "{path}"
        );
    }
}
