//! Accept loops: TLS (with plain-HTTP detection and real resets) and the plain admin listener.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;
use tracing::{debug, warn};

use crate::state::{App, CounterCells};

/// Bound on sniffing plus the TLS handshake, so an idle client cannot pin a task forever.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Request-extension handle a fault uses to kill the connection it arrived on.
#[derive(Clone)]
pub(crate) struct ConnAbort(Arc<Notify>);

// === impl ConnAbort ===

impl ConnAbort {
    pub(crate) fn trigger(&self) {
        // `notify_one` stores a permit, so the connection task sees it even if not yet waiting.
        self.0.notify_one();
    }
}

/// Accepts until `shutdown` flips; dropping the loop aborts every connection task.
async fn accept_loop<F, Fut>(listener: TcpListener, mut shutdown: watch::Receiver<bool>, handle: F)
where
    F: Fn(TcpStream) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    let _ = stream.set_nodelay(true);
                    connections.spawn(handle(stream));
                }
                Err(error) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections.shutdown().await;
}

/// Serves the FinCode API over TLS.
pub(crate) async fn serve_tls(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    router: Router,
    app: Arc<App>,
    shutdown: watch::Receiver<bool>,
) {
    accept_loop(listener, shutdown, move |stream| {
        handle_tls(stream, acceptor.clone(), router.clone(), app.clone())
    })
    .await;
}

/// Serves the admin API in plain HTTP/1.1 and h2c.
pub(crate) async fn serve_plain(
    listener: TcpListener,
    router: Router,
    shutdown: watch::Receiver<bool>,
) {
    accept_loop(listener, shutdown, move |stream| {
        let router = router.clone();
        async move {
            if let Err(error) = serve_http(stream, router, None).await {
                debug!(%error, "admin connection ended with an error");
            }
        }
    })
    .await;
}

async fn handle_tls(stream: TcpStream, acceptor: TlsAcceptor, router: Router, app: Arc<App>) {
    let counters = &app.counters;
    let Ok(sniffed) = tokio::time::timeout(HANDSHAKE_TIMEOUT, sniff(&stream)).await else {
        CounterCells::bump(&counters.tls_handshake_failures);
        return;
    };
    match sniffed {
        Ok(Sniffed::PlainHttp) => {
            CounterCells::bump(&counters.plain_http_attempts);
            refuse_plain_http(stream).await;
            return;
        }
        Ok(Sniffed::Closed) | Err(_) => return,
        Ok(Sniffed::Other) => {}
    }

    let (stream, linger) = match split_for_reset(stream) {
        Ok(pair) => pair,
        Err(error) => {
            warn!(%error, "could not duplicate the socket for resets");
            return;
        }
    };
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(error)) => {
            debug!(%error, "TLS handshake failed");
            CounterCells::bump(&counters.tls_handshake_failures);
            return;
        }
        Err(_) => {
            CounterCells::bump(&counters.tls_handshake_failures);
            return;
        }
    };
    CounterCells::bump(&counters.connections);

    let abort = ConnAbort(Arc::new(Notify::new()));
    let aborted = abort.0.clone();
    tokio::select! {
        result = serve_http(tls, router, Some(abort)) => {
            if let Err(error) = result {
                debug!(%error, "connection ended with an error");
            }
        }
        () = aborted.notified() => {
            // Zero linger on the last descriptor turns the close into an RST, which is what a
            // client sees when FinCode's load balancer drops a connection mid-request.
            if let Err(error) = linger.set_zero_linger() {
                warn!(%error, "could not set SO_LINGER 0; the reset will look like a close");
            }
        }
    }
    // The serve future (and its descriptor) is gone; dropping `linger` closes the socket.
    drop(linger);
}

/// Keeps a second descriptor for the socket so `SO_LINGER 0` can be set only when a reset fault
/// fires. Setting it up front would make every ordinary close an RST too, which can discard a
/// response still in the send buffer.
fn split_for_reset(stream: TcpStream) -> std::io::Result<(TcpStream, TcpSocket)> {
    let std_stream = stream.into_std()?;
    let duplicate = std_stream.try_clone()?;
    Ok((
        TcpStream::from_std(std_stream)?,
        TcpSocket::from_std_stream(duplicate),
    ))
}

async fn serve_http<I>(
    io: I,
    router: Router,
    abort: Option<ConnAbort>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut request: http::Request<Incoming>| {
        if let Some(abort) = &abort {
            request.extensions_mut().insert(abort.clone());
        }
        router.clone().oneshot(request)
    });
    let builder = Builder::new(TokioExecutor::new());
    builder
        .serve_connection_with_upgrades(TokioIo::new(io), service)
        .await
}

/// What the first bytes on the TLS port look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sniffed {
    PlainHttp,
    /// TLS, or garbage the handshake will reject (and count).
    Other,
    Closed,
}

const METHODS: [&[u8]; 7] = [
    b"GET ",
    b"POST ",
    b"PUT ",
    b"HEAD ",
    b"DELETE ",
    b"PATCH ",
    b"OPTIONS ",
];

/// Classifies a prefix of the stream; `None` means "could still be a method, need more bytes".
pub(crate) fn classify(seen: &[u8]) -> Option<Sniffed> {
    if seen.is_empty() {
        return None;
    }
    if METHODS.iter().any(|m| seen.starts_with(m)) {
        return Some(Sniffed::PlainHttp);
    }
    if METHODS.iter().any(|m| m.starts_with(seen)) {
        return None;
    }
    Some(Sniffed::Other)
}

async fn sniff(stream: &TcpStream) -> std::io::Result<Sniffed> {
    let mut buf = [0u8; 8];
    loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 {
            return Ok(Sniffed::Closed);
        }
        match classify(&buf[..n]) {
            Some(sniffed) => return Ok(sniffed),
            // A full buffer always classifies; only a short read lands here. Peek returns at
            // once while bytes are queued, so wait a moment for the rest instead of spinning.
            None => tokio::time::sleep(Duration::from_millis(2)).await,
        }
    }
}

async fn refuse_plain_http(mut stream: TcpStream) {
    let body =
        br#"{"status":"FAILED","code":"VALIDATION_ERROR","message":"This port only speaks HTTPS"}"#;
    let head = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body).await;
    let _ = stream.shutdown().await;
    // Drain what the client sent: closing with unread bytes makes the kernel send an RST,
    // which could destroy the 400 before the client reads it.
    let mut sink = [0u8; 4096];
    let drain = async {
        while let Ok(n) = stream.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(500), drain).await;
}
