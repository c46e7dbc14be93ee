//! The egress listener: HTTP/1.1 and h2c (prior knowledge) from the app on one port,
//! one task per connection, graceful drain on shutdown.

use std::{convert::Infallible, error::Error as StdError, future::Future, time::Duration};

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use tokio::net::TcpListener;
use tower::Service;

/// How long a client may take to send a request head; bounds slowloris connections.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// hyper's smallest allowed HTTP/1 read buffer.
const MIN_H1_BUFFER: usize = 8192;

/// Serves `service` on `listener` until `shutdown` resolves, then stops accepting and
/// waits up to `drain` for in-flight requests to finish.
pub(crate) async fn serve<S, B>(
    listener: TcpListener,
    service: S,
    max_head: usize,
    drain: Duration,
    shutdown: impl Future<Output = ()>,
) where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        // A little room over the limit so that the limits layer, not the parser,
        // answers a slightly oversized head, with a problem+json 431. Heads far over
        // the limit get hyper's bare 431.
        .max_buf_size((max_head * 2).max(MIN_H1_BUFFER));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(max_head * 2).unwrap_or(u32::MAX));

    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let connection = builder
            .serve_connection(
                TokioIo::new(stream),
                TowerToHyperService::new(service.clone()),
            )
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%peer, %error, "egress connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            ?drain,
            "in-flight requests still running after the drain period; closing"
        );
    }
}
