//! A worker's own connections to FinCode: the innermost part of the upstream client.
//!
//! Each egress worker runtime has its own [`Pool`] (see
//! [`crate::upstream::Upstream::with_own_pool`]), so a request only ever uses connections
//! its own thread drives and the pool's lock is not contended on the hot path. It
//! replaces hyper-util's general-purpose pool, which per request hashes its key (SipHash
//! of scheme and authority) several times, races the checkout against a connect,
//! formats the `Host` header, and spawns a task to wait for an HTTP/1 connection to
//! become idle again: about 12 000 instructions a request (callgrind, ping at `info`),
//! where this checkout is a scan of a short vector.
//!
//! - **HTTP/1.1**: a connection carries one request at a time. Its sender goes back into
//!   the pool as soon as the request is handed over, and
//!   [`is_ready`](http1::SendRequest::is_ready) says when the connection wants the next
//!   one (the previous response read whole). A checkout takes the first ready one and
//!   drops the closed and the expired ones it passes.
//! - **HTTP/2** (when ALPN chose it): one connection multiplexes every request; its
//!   sender is cloned per request.
//! - **Connections never go anywhere but `upstream.base_url`'s origin**: the pool
//!   connects to it whatever the request's URI says.
//! - **A request a reused connection handed back unsent** (FinCode closed the idle
//!   connection as it was picked) is sent again on another connection: hyper hands the
//!   request back only when no byte of it was written, so this is safe for any method
//!   (hyper-util's `retry_canceled_requests`, which this replaces, did the same). On a
//!   fresh connection it is an error, as there.
//! - **Idle connections** are used for at most `upstream.pool_idle_timeout` after their
//!   last request started, and at most `upstream.pool_max_idle_per_host` stay idle (0: no
//!   reuse at all); a sweeper task closes the rest while the pool is quiet.

use std::{
    error::Error as StdError,
    fmt,
    future::Future,
    sync::{Arc, Mutex, MutexGuard, PoisonError, Weak},
    time::{Duration, Instant},
};

use http::{HeaderValue, Request, Response, Uri, header::HOST, uri};
use hyper::{
    body::Incoming,
    client::conn::{http1, http2},
};
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::connect::{Connection as _, HttpConnector},
    rt::{TokioExecutor, TokioTimer},
};
use tower::ServiceExt as _;

/// TCP (with its connect timeout), then TLS with ALPN.
pub(crate) type Connector = HttpsConnector<HttpConnector>;

type BoxError = Box<dyn StdError + Send + Sync>;

/// HTTP/2 header lists from FinCode up to this size are accepted (hyper's default is
/// 16 KiB, which a large JWT plus tracing headers can approach).
const H2_MAX_HEADER_LIST: u32 = 64 * 1024;

/// HTTP/2 pings keep an idle multiplexed connection known to be alive.
const H2_KEEP_ALIVE: Duration = Duration::from_secs(20);

/// Why a request got no response.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PoolError {
    /// No connection could be made (TCP connect, TLS or the HTTP/2 handshake): nothing
    /// of the request was sent.
    #[error("connecting to FinCode failed")]
    Connect(#[source] BoxError),
    /// The connection failed after the request was handed to it: it may have been sent.
    #[error("the exchange with FinCode failed")]
    Exchange(#[source] hyper::Error),
}

impl PoolError {
    /// Whether the failure came before any connection carried the request.
    pub(crate) fn is_connect(&self) -> bool {
        matches!(self, Self::Connect(_))
    }
}

/// `upstream.pool_idle_timeout` and `upstream.pool_max_idle_per_host`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Settings {
    pub(crate) idle_timeout: Duration,
    pub(crate) max_idle: usize,
}

/// Connections to one origin; see the module docs. Cheap to clone (one `Arc`).
pub(crate) struct Pool<B> {
    shared: Arc<Shared<B>>,
}

struct Shared<B> {
    connector: Connector,
    settings: Settings,
    /// `upstream.base_url`'s scheme and authority: where every connection goes.
    origin: Uri,
    /// What HTTP/1 requests carry as `Host`: the authority without the scheme's default
    /// port, made once.
    host: HeaderValue,
    conns: Mutex<Conns<B>>,
}

struct Conns<B> {
    /// HTTP/1 connections, idle or busy with a request.
    h1: Vec<Pooled<http1::SendRequest<B>>>,
    /// The multiplexed connection, once ALPN chose HTTP/2.
    h2: Option<Pooled<http2::SendRequest<B>>>,
    /// Whether a sweeper task is running.
    sweeping: bool,
}

struct Pooled<S> {
    sender: S,
    /// When its last request started.
    since: Instant,
}

enum Conn<B> {
    H1(http1::SendRequest<B>),
    H2(http2::SendRequest<B>),
}

// === impl Pool ===

impl<B> Clone for Pool<B> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<B> fmt::Debug for Pool<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("origin", &self.shared.origin)
            .field("settings", &self.shared.settings)
            .finish_non_exhaustive()
    }
}

impl<B> Pool<B> {
    /// An empty pool of connections to `scheme://authority`.
    pub(crate) fn new(
        connector: Connector,
        settings: Settings,
        scheme: &uri::Scheme,
        authority: &uri::Authority,
    ) -> Self {
        let origin = Uri::builder()
            .scheme(scheme.clone())
            .authority(authority.clone())
            .path_and_query("/")
            .build()
            .unwrap_or_default();
        Self {
            shared: Arc::new(Shared {
                connector,
                settings,
                origin,
                host: host_header(scheme, authority),
                conns: Mutex::new(Conns {
                    h1: Vec::new(),
                    h2: None,
                    sweeping: false,
                }),
            }),
        }
    }

    /// How many connections the pool holds (idle or busy; a closed one until a checkout
    /// or the sweeper passes it).
    #[cfg(test)]
    fn len(&self) -> usize {
        let conns = self.shared.lock();
        conns.h1.len() + usize::from(conns.h2.is_some())
    }
}

impl<B> Pool<B>
where
    B: http_body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    /// Sends `req` (its URI absolute, under the pool's origin) on a pooled connection or
    /// a new one, and resolves with FinCode's response head.
    pub(crate) async fn send(&self, mut req: Request<B>) -> Result<Response<Incoming>, PoolError> {
        loop {
            let now = Instant::now();
            let (conn, reused) = match self.shared.checkout(now) {
                Some(conn) => (conn, true),
                // Boxed: a connect's state (TCP, TLS, HTTP/2 handshakes) is kilobytes,
                // and every request's future would otherwise carry, and move, that room.
                None => (Box::pin(self.connect()).await?, false),
            };
            let sent = match conn {
                Conn::H1(mut sender) => {
                    req.headers_mut()
                        .entry(HOST)
                        .or_insert_with(|| self.shared.host.clone());
                    origin_form(req.uri_mut());
                    let response = sender.try_send_request(req);
                    // Busy until FinCode's answer is read whole; `is_ready` will say.
                    self.check_in(sender, now);
                    response.await
                }
                Conn::H2(mut sender) => sender.try_send_request(req).await,
            };
            match sent {
                Ok(response) => return Ok(response),
                Err(mut error) => match error.take_message() {
                    // Handed back unsent by a connection that had served before: it
                    // closed as it was picked. Another connection, same request. The loop
                    // ends: hyper hands a request back only from a connection whose task
                    // has gone (a checked-out sender is ready, so it accepts), and a
                    // closed sender is never checked out again; at worst every pooled
                    // one is passed once, then a fresh connection answers or fails.
                    Some(unsent) if reused => {
                        tracing::debug!(
                            "a pooled connection to FinCode closed before the request was written; sending it on another"
                        );
                        req = unsent;
                        // HTTP/1 took it to origin form; the next connection may be
                        // HTTP/2, which needs the scheme and authority again.
                        absolute_form(req.uri_mut(), &self.shared.origin);
                    }
                    _ => return Err(PoolError::Exchange(error.into_error())),
                },
            }
        }
    }

    /// A new connection: HTTP/2 when ALPN chose it (then shared from now on), else
    /// HTTP/1.1. Its driver runs as a task on this thread's runtime.
    async fn connect(&self) -> Result<Conn<B>, PoolError> {
        let io = self
            .shared
            .connector
            .clone()
            .oneshot(self.shared.origin.clone())
            .await
            .map_err(PoolError::Connect)?;
        if io.connected().is_negotiated_h2() {
            let (sender, connection) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .max_header_list_size(H2_MAX_HEADER_LIST)
                .keep_alive_interval(H2_KEEP_ALIVE)
                .keep_alive_while_idle(true)
                .handshake(io)
                .await
                .map_err(|error| PoolError::Connect(error.into()))?;
            tokio::spawn(drive(connection));
            let mut conns = self.shared.lock();
            // Of connections made at once, the first stays shared; a later one carries
            // its own request and closes when that is done.
            if conns.h2.as_ref().is_none_or(|h2| h2.sender.is_closed()) {
                conns.h2 = Some(Pooled {
                    sender: sender.clone(),
                    since: Instant::now(),
                });
                self.sweep_later(&mut conns);
            }
            Ok(Conn::H2(sender))
        } else {
            let (sender, connection) = http1::handshake(io)
                .await
                .map_err(|error| PoolError::Connect(error.into()))?;
            tokio::spawn(drive(connection));
            Ok(Conn::H1(sender))
        }
    }

    /// Keeps an HTTP/1 sender whose request was just handed over (with pooling off, it is
    /// dropped: its connection closes once that request is done).
    fn check_in(&self, sender: http1::SendRequest<B>, now: Instant) {
        if self.shared.settings.max_idle == 0 {
            return;
        }
        let mut conns = self.shared.lock();
        conns.h1.push(Pooled { sender, since: now });
        self.sweep_later(&mut conns);
    }

    /// Starts the sweeper unless it runs: it closes expired and surplus idle connections
    /// while no checkout passes them, and ends when the pool is empty.
    fn sweep_later(&self, conns: &mut Conns<B>) {
        if conns.sweeping {
            return;
        }
        conns.sweeping = true;
        let every = (self.shared.settings.idle_timeout / 2)
            .clamp(Duration::from_millis(50), Duration::from_secs(5));
        tokio::spawn(sweeper(Arc::downgrade(&self.shared), every));
    }
}

// === impl Shared ===

impl<B> Shared<B> {
    fn lock(&self) -> MutexGuard<'_, Conns<B>> {
        // Nothing panics while the lock is held; a poisoned pool is still consistent.
        self.conns.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A connection ready for a request, if the pool has one: the HTTP/2 connection, or
    /// the first ready HTTP/1 one. Drops the closed and expired ones it passes.
    fn checkout(&self, now: Instant) -> Option<Conn<B>> {
        let timeout = self.settings.idle_timeout;
        let mut conns = self.lock();
        if let Some(h2) = &mut conns.h2 {
            if !h2.sender.is_closed() && now.saturating_duration_since(h2.since) < timeout {
                h2.since = now;
                return Some(Conn::H2(h2.sender.clone()));
            }
            conns.h2 = None;
        }
        let mut at = 0;
        while let Some(pooled) = conns.h1.get(at) {
            if pooled.sender.is_closed() {
                conns.h1.swap_remove(at);
            } else if pooled.sender.is_ready() {
                let pooled = conns.h1.swap_remove(at);
                if now.saturating_duration_since(pooled.since) < timeout {
                    return Some(Conn::H1(pooled.sender));
                }
                // Idle too long: dropped here, which closes it.
            } else {
                at += 1;
            }
        }
        None
    }

    /// Drops closed connections, idle ones past the timeout, and the oldest idle ones
    /// beyond `max_idle`; `false` once nothing is left to watch.
    fn sweep(&self, now: Instant) -> bool {
        let Settings {
            idle_timeout,
            max_idle,
        } = self.settings;
        let mut conns = self.lock();
        let expired = |since: Instant| now.saturating_duration_since(since) >= idle_timeout;
        if conns
            .h2
            .as_ref()
            .is_some_and(|h2| h2.sender.is_closed() || expired(h2.since))
        {
            conns.h2 = None;
        }
        conns.h1.retain(|pooled| {
            let idle_too_long = pooled.sender.is_ready() && expired(pooled.since);
            !pooled.sender.is_closed() && !idle_too_long
        });
        let mut idle = conns.h1.iter().filter(|p| p.sender.is_ready()).count();
        while idle > max_idle {
            let oldest = conns
                .h1
                .iter()
                .enumerate()
                .filter(|(_, p)| p.sender.is_ready())
                .min_by_key(|(_, p)| p.since)
                .map(|(at, _)| at);
            let Some(oldest) = oldest else { break };
            conns.h1.swap_remove(oldest);
            idle -= 1;
        }
        let watching = !conns.h1.is_empty() || conns.h2.is_some();
        conns.sweeping = watching;
        watching
    }
}

/// Runs a connection until it ends; its error (FinCode closed it, a reset) is already
/// the pending request's, so here it is only a debug line.
async fn drive(connection: impl Future<Output = hyper::Result<()>>) {
    if let Err(error) = connection.await {
        tracing::debug!(%error, "a connection to FinCode ended");
    }
}

/// Every `every`, sweeps the pool while it exists and holds connections.
async fn sweeper<B>(pool: Weak<Shared<B>>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(shared) = pool.upgrade() else {
            return;
        };
        if !shared.sweep(Instant::now()) {
            return;
        }
    }
}

/// `Host` for HTTP/1 requests: `host[:port]`, the port left out when it is the scheme's
/// default (as hyper-util's client wrote it).
fn host_header(scheme: &uri::Scheme, authority: &uri::Authority) -> HeaderValue {
    let default_port = if *scheme == uri::Scheme::HTTPS {
        443
    } else {
        80
    };
    let text = match authority.port_u16() {
        Some(port) if port != default_port => format!("{}:{port}", authority.host()),
        _ => authority.host().to_owned(),
    };
    // An `Authority` holds only bytes a header value may hold.
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("localhost"))
}

/// `uri` under `origin`'s scheme and authority when it is in origin form (the reverse
/// of [`origin_form`], for a request sent again); an absolute URI stays as it is.
fn absolute_form(uri: &mut Uri, origin: &Uri) {
    if uri.scheme().is_some() {
        return;
    }
    let mut parts = uri::Parts::default();
    parts.scheme = origin.scheme().cloned();
    parts.authority = origin.authority().cloned();
    parts.path_and_query = uri.path_and_query().cloned();
    if let Ok(absolute) = Uri::from_parts(parts) {
        *uri = absolute;
    }
}

/// The request target of an HTTP/1 request to an origin server: the path and query
/// alone (RFC 9112 section 3.2.1).
fn origin_form(uri: &mut Uri) {
    *uri = match uri.path_and_query() {
        Some(path) if path.as_str() != "/" => {
            let mut parts = uri::Parts::default();
            parts.path_and_query = Some(path.clone());
            Uri::from_parts(parts).unwrap_or_default()
        }
        _ => Uri::default(),
    };
}

#[cfg(test)]
#[path = "pool_tests.rs"]
mod tests;
