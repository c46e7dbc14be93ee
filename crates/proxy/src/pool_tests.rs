//! The pool against a plain HTTP/1.1 server on loopback that counts its connections.
#![allow(clippy::unwrap_used)]

use std::{
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response, header};
use http_body_util::{BodyExt as _, Full};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::{client::legacy::connect::HttpConnector, rt::TokioIo};
use tokio::net::TcpListener;

use super::{Pool, Settings};

/// What the server is told to do with each request.
#[derive(Clone, Copy)]
struct Behaviour {
    /// Answer after this long.
    delay: Duration,
    /// Answer with `Connection: close` (and close).
    close: bool,
}

/// A plain HTTP/1.1 server: each answer names the connection it came on (numbered from
/// 1) and the `Host` and request target the server saw.
struct Server {
    authority: http::uri::Authority,
    accepted: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
}

async fn server(behaviour: Behaviour) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let authority = listener.local_addr().unwrap().to_string().parse().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let open = Arc::new(AtomicUsize::new(0));
    let (counted, opened) = (Arc::clone(&accepted), Arc::clone(&open));
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let number = counted.fetch_add(1, Ordering::SeqCst) + 1;
            opened.fetch_add(1, Ordering::SeqCst);
            let opened = Arc::clone(&opened);
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| async move {
                    tokio::time::sleep(behaviour.delay).await;
                    let host = req.headers().get(header::HOST).cloned();
                    let body = format!(
                        "{number} {} {}",
                        host.as_ref().and_then(|h| h.to_str().ok()).unwrap_or("-"),
                        req.uri()
                    );
                    let mut response = Response::new(Full::new(Bytes::from(body)));
                    if behaviour.close {
                        response
                            .headers_mut()
                            .insert(header::CONNECTION, "close".parse().unwrap());
                    }
                    Ok::<_, Infallible>(response)
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                opened.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    Server {
        authority,
        accepted,
        open,
    }
}

const PROMPT: Behaviour = Behaviour {
    delay: Duration::ZERO,
    close: false,
};

const KEEP: Settings = Settings {
    idle_timeout: Duration::from_secs(30),
    max_idle: 8,
};

/// A pool to `authority` over plain HTTP (the connector the sidecar builds, with
/// `https_or_http` as `upstream.allow_insecure` sets it).
fn pool(authority: &http::uri::Authority, settings: Settings) -> Pool<Full<Bytes>> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Pool::new(connector, settings, &http::uri::Scheme::HTTP, authority)
}

/// Sends a GET for `path` and reads the answer whole.
async fn get(pool: &Pool<Full<Bytes>>, authority: &http::uri::Authority, path: &str) -> String {
    let req = Request::get(format!("http://{authority}{path}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = pool.send(req).await.unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

/// Waits (up to a second) until `done` holds.
async fn eventually(mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..100 {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    done()
}

#[tokio::test]
async fn requests_one_after_another_share_one_connection_in_origin_form_with_host() {
    let server = server(PROMPT).await;
    let pool = pool(&server.authority, KEEP);
    for _ in 0..5 {
        let answer = get(&pool, &server.authority, "/a/b?c=d").await;
        assert_eq!(answer, format!("1 {} /a/b?c=d", server.authority));
    }
    assert_eq!(server.accepted.load(Ordering::SeqCst), 1);
    assert_eq!(pool.len(), 1);
}

#[tokio::test]
async fn concurrent_requests_get_a_connection_each_and_then_share_them() {
    let server = server(Behaviour {
        delay: Duration::from_millis(100),
        close: false,
    })
    .await;
    let pool = pool(&server.authority, KEEP);
    let calls = (0..3).map(|_| get(&pool, &server.authority, "/"));
    futures_util::future::join_all(calls).await;
    assert_eq!(server.accepted.load(Ordering::SeqCst), 3);
    for _ in 0..3 {
        get(&pool, &server.authority, "/").await;
    }
    assert_eq!(
        server.accepted.load(Ordering::SeqCst),
        3,
        "the three were reused"
    );
}

#[tokio::test]
async fn a_connection_idle_past_the_timeout_is_not_used_and_the_sweeper_closes_it() {
    let server = server(PROMPT).await;
    let pool = pool(
        &server.authority,
        Settings {
            idle_timeout: Duration::from_millis(100),
            max_idle: 8,
        },
    );
    get(&pool, &server.authority, "/").await;
    assert!(
        eventually(|| server.open.load(Ordering::SeqCst) == 0).await,
        "the sweeper closed the idle connection"
    );
    assert_eq!(pool.len(), 0);
    let answer = get(&pool, &server.authority, "/").await;
    assert!(answer.starts_with("2 "), "{answer}");
}

#[tokio::test]
async fn a_checkout_never_hands_out_an_expired_connection() {
    let server = server(PROMPT).await;
    let pool = pool(&server.authority, KEEP);
    get(&pool, &server.authority, "/").await;
    let start = std::time::Instant::now();
    // Ready again once its answer was read (the connection's task runs on).
    assert!(
        eventually(|| {
            let ready = pool.shared.checkout(start);
            let found = ready.is_some();
            if let Some(super::Conn::H1(sender)) = ready {
                pool.check_in(sender, start.checked_sub(Duration::from_millis(1)).unwrap());
            }
            found
        })
        .await
    );
    // Looked at later than the idle timeout allows: the checkout itself drops it (the
    // sweeper, on the real clock, would not see it expire for another 30 s).
    assert!(pool.shared.checkout(start + KEEP.idle_timeout).is_none());
    assert_eq!(pool.len(), 0, "dropped on the way");
    assert!(eventually(|| server.open.load(Ordering::SeqCst) == 0).await);
}

#[tokio::test]
async fn with_no_idle_connections_allowed_nothing_is_reused_or_kept_open() {
    let server = server(PROMPT).await;
    let pool = pool(
        &server.authority,
        Settings {
            idle_timeout: Duration::from_secs(30),
            max_idle: 0,
        },
    );
    for n in 1..=3 {
        let answer = get(&pool, &server.authority, "/").await;
        assert!(answer.starts_with(&format!("{n} ")), "{answer}");
    }
    assert_eq!(pool.len(), 0);
    assert!(eventually(|| server.open.load(Ordering::SeqCst) == 0).await);
}

#[tokio::test]
async fn idle_connections_beyond_the_limit_are_closed_by_the_sweeper() {
    let server = server(Behaviour {
        delay: Duration::from_millis(50),
        close: false,
    })
    .await;
    let pool = pool(
        &server.authority,
        Settings {
            // The sweeper looks every 50 ms; nothing expires in the test.
            idle_timeout: Duration::from_millis(100),
            max_idle: 2,
        },
    );
    futures_util::future::join_all((0..4).map(|_| get(&pool, &server.authority, "/"))).await;
    assert_eq!(server.accepted.load(Ordering::SeqCst), 4);
    assert!(
        eventually(|| pool.len() <= 2).await,
        "{} connections kept",
        pool.len()
    );
}

#[tokio::test]
async fn a_connection_the_server_closes_is_not_used_again() {
    let server = server(Behaviour {
        delay: Duration::ZERO,
        close: true,
    })
    .await;
    let pool = pool(&server.authority, KEEP);
    for n in 1..=3 {
        let answer = get(&pool, &server.authority, "/").await;
        assert!(answer.starts_with(&format!("{n} ")), "{answer}");
    }
}

#[tokio::test]
async fn a_refused_connection_is_a_connect_error() {
    // Bound and dropped: nothing listens there.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let authority = listener.local_addr().unwrap().to_string().parse().unwrap();
    drop(listener);
    let pool = pool(&authority, KEEP);
    let req = Request::get(format!("http://{authority}/"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let error = pool.send(req).await.unwrap_err();
    assert!(error.is_connect(), "{error:?}");
}

#[tokio::test]
async fn connections_go_to_the_pools_origin_whatever_the_uri_says() {
    let server = server(PROMPT).await;
    let pool = pool(&server.authority, KEEP);
    let answer = get(&pool, &"elsewhere.example:9".parse().unwrap(), "/x").await;
    assert_eq!(answer, format!("1 {} /x", server.authority));
}

#[test]
fn host_leaves_out_the_default_port() {
    use http::uri::Scheme;
    let host = |scheme: &Scheme, authority: &str| {
        super::host_header(scheme, &authority.parse().unwrap())
            .to_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(
        host(&Scheme::HTTPS, "acme.fincode.tech"),
        "acme.fincode.tech"
    );
    assert_eq!(
        host(&Scheme::HTTPS, "acme.fincode.tech:443"),
        "acme.fincode.tech"
    );
    assert_eq!(host(&Scheme::HTTPS, "127.0.0.1:8443"), "127.0.0.1:8443");
    assert_eq!(host(&Scheme::HTTP, "[::1]:80"), "[::1]");
    assert_eq!(host(&Scheme::HTTP, "[::1]:8080"), "[::1]:8080");
}

#[test]
fn origin_form_keeps_the_path_and_query_only() {
    for (absolute, origin) in [
        ("https://a.example/x/y?z=1", "/x/y?z=1"),
        ("https://a.example/", "/"),
        ("https://a.example", "/"),
        ("/already?q", "/already?q"),
    ] {
        let mut uri: http::Uri = absolute.parse().unwrap();
        super::origin_form(&mut uri);
        assert_eq!(uri, origin, "{absolute}");
    }
}

#[test]
fn absolute_form_undoes_origin_form_under_the_pools_origin() {
    let origin: http::Uri = "https://acme.fincode.tech:8443/".parse().unwrap();
    for absolute in [
        "https://acme.fincode.tech:8443/api/v6/x?y=1",
        "https://acme.fincode.tech:8443/",
    ] {
        let mut uri: http::Uri = absolute.parse().unwrap();
        super::origin_form(&mut uri);
        super::absolute_form(&mut uri, &origin);
        assert_eq!(uri, absolute);
    }
    // Already absolute: left alone.
    let mut uri: http::Uri = "http://other.example/z".parse().unwrap();
    super::absolute_form(&mut uri, &origin);
    assert_eq!(uri, "http://other.example/z");
}
