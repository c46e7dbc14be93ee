#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]
//! One server module for every listener (DESIGN.md 3): the egress port, the admin port
//! and the webhook listener all accept connections here, so each gets the same defences
//! against slow and hostile clients.
//!
//! - **Header-read timeout**: hyper's, for HTTP/1 heads (it also restarts between
//!   keep-alive requests). hyper ignores it without a timer, so one is always installed.
//! - **Protocol detection / first request**: a plain connection's first bytes are peeked
//!   at to tell HTTP/1 from HTTP/2 (`sniff`); when they do not decide it yet, and on TLS,
//!   the auto builder reads a preface before it knows. hyper puts no timer on either. A
//!   connection that has not started a request within `header_read_timeout` of being
//!   accepted (TLS handshake, preface and HTTP/2 SETTINGS included) is closed here.
//! - **Idle timeout**: a connection with no request in flight for `idle_timeout` is
//!   closed, HTTP/1 and HTTP/2 alike.
//! - **Stall timeout**: a connection whose requests in flight make no progress (no new
//!   request, response head or response body chunk) for `stall_timeout` is closed at once,
//!   so a client that never reads its responses (an HTTP/2 window of 0 while it answers
//!   PINGs) cannot hold a slot forever; counted in
//!   `fincode_listener_stalled_connections_total{listener}`.
//! - **HTTP/2**: a cap on concurrent streams, a header-list limit and keep-alive PINGs.
//! - **Connection cap**: at `max_connections` the oldest connection with no request in
//!   flight is closed to make room for the new one; only when every connection is busy is
//!   the new one closed at once. Leaving surplus connections in the kernel's accept queue
//!   (the other common choice) would put a kubelet probe behind thousands of idle
//!   attackers, each holding a slot until its timeout; an idle connection, by contrast,
//!   owes nobody an answer, so closing it loses nothing. Open connections are the
//!   `fincode_listener_connections{listener}` gauge; with no idle connection, the oldest
//!   whose requests are all marked [`Evictable`] (an unverified webhook body) goes instead; closed-at-the-cap ones are counted in
//!   `fincode_listener_connections_rejected_total{listener,reason}`.
//! - **Lifecycle**: a [`CancellationToken`] stops accepting; connections are then asked to
//!   finish (HTTP/1 after the response in flight, HTTP/2 with GOAWAY) and tracked with a
//!   [`TaskTracker`] until they are done or the drain
//!   deadline passes, when the rest are closed.
//!
//! - **Catch-panic**: a handler that panics answers a bare 500 (never the panic's message)
//!   and is counted in `fincode_listener_panics_total{listener}`; the connection lives on.
//!
//! Services see the client's address as a [`Peer`] request extension, and can let a
//! request from a sender not yet trusted be evicted at the cap through [`Evictable`].

mod catch_panic;
mod connections;
pub mod hook;
mod in_place;
mod metrics;
mod sniff;
mod socket;
pub mod tls;
mod track;
mod workers;

use std::{
    convert::Infallible,
    error::Error as StdError,
    future::Future,
    net::SocketAddr,
    pin::{Pin, pin},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use fincode_config::ListenerLimits;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulConnection},
};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;
use tower::Service;

pub use tokio_util::sync::CancellationToken;

use self::{
    catch_panic::CatchPanic,
    connections::{Connections, Slot},
    hook::Hooked,
    socket::{Listener, Socket},
    track::Track,
};
pub use self::{
    metrics::ConnectionMetrics,
    track::{Evictable, EvictableGuard, Peer, TrackedBody},
    workers::{Workers, default_count as default_worker_count},
};

/// hyper's smallest allowed HTTP/1 read buffer.
const MIN_H1_BUFFER: usize = 8192;

/// The head size admin and webhook clients get unless told otherwise: probes, scrapes and
/// FinCode's deliveries carry small heads; hyper's own default (~400 KiB a connection)
/// would let a few hundred slow clients pin a lot of memory.
const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;

/// After the drain deadline, how long closed connections get to finish unwinding.
const FORCE_CLOSE_GRACE: Duration = Duration::from_secs(1);

/// How long an idle connection asked to close gracefully (HTTP/2 GOAWAY) may take before
/// it is simply dropped.
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(1);

/// One listener's server: limits, optional TLS, metrics. Built once from the config.
#[derive(Clone)]
pub struct Server {
    name: &'static str,
    limits: ListenerLimits,
    max_header_bytes: usize,
    tls: Option<TlsAcceptor>,
    metrics: ConnectionMetrics,
    catch_panics: bool,
}

// === impl Server ===

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("name", &self.name)
            .field("limits", &self.limits)
            .field("max_header_bytes", &self.max_header_bytes)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl Server {
    /// A plain-TCP server for the listener `name` (the metrics' `listener` label) with
    /// `limits`. Its metrics go nowhere until [`Server::with_metrics`].
    pub fn new(name: &'static str, limits: &ListenerLimits) -> Self {
        Self {
            name,
            limits: limits.clone(),
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            tls: None,
            metrics: ConnectionMetrics::default(),
            catch_panics: true,
        }
    }

    /// The largest request head accepted: HTTP/1's read buffer (at least hyper's 8 KiB
    /// minimum) and HTTP/2's header-list size.
    #[must_use]
    pub fn with_max_header_bytes(mut self, bytes: usize) -> Self {
        self.max_header_bytes = bytes;
        self
    }

    /// Terminates TLS with `tls` (ALPN as the acceptor offers it). The handshake counts
    /// against `header_read_timeout`.
    #[must_use]
    pub fn with_tls(mut self, tls: Option<TlsAcceptor>) -> Self {
        self.tls = tls;
        self
    }

    /// Reports open and refused connections into `metrics`.
    #[must_use]
    pub fn with_metrics(mut self, metrics: ConnectionMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// The service answers its own panics (the egress stack's outermost catch-panic gives
    /// problem+json with the correlation id), so the server adds no second `catch_unwind`
    /// on every poll of every request.
    #[must_use]
    pub fn panics_answered_by_service(mut self) -> Self {
        self.catch_panics = false;
        self
    }

    /// The listener's name, as in its metrics and logs.
    pub fn name(&self) -> &'static str {
        self.name
    }

    fn builder(&self) -> auto::Builder<TokioExecutor> {
        let limits = &self.limits;
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            // A client's EOF while its request is in flight does not drop the request:
            // the egress call may already be at FinCode, and its answer must still reach
            // the audit trail, the logs and the metrics. hyper otherwise reads the socket
            // during every request to spot that EOF, which also forces each new
            // connection into the reactor (see `socket`).
            .half_close(true)
            .header_read_timeout(limits.header_read_timeout)
            .max_buf_size(self.max_header_bytes.max(MIN_H1_BUFFER));
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(limits.http2_max_concurrent_streams)
            .max_header_list_size(u32::try_from(self.max_header_bytes).unwrap_or(u32::MAX))
            .keep_alive_interval(
                (!limits.http2_keepalive_interval.is_zero())
                    .then_some(limits.http2_keepalive_interval),
            )
            .keep_alive_timeout(limits.http2_keepalive_timeout);
        builder
    }

    /// Serves `service` on `listener` until `shutdown` is cancelled; then stops accepting,
    /// lets requests in flight finish for up to `drain`, and closes what is left.
    /// Connections run on the runtime this is called on.
    pub async fn serve<S, B>(
        self,
        listener: TcpListener,
        service: S,
        shutdown: CancellationToken,
        drain: Duration,
    ) where
        S: ConnectionService<B>,
        B: ResponseBody,
    {
        self.serve_placed(listener, Placement::Here(service), shutdown, drain)
            .await;
    }

    /// As [`Server::serve`], but connections are accepted and served on each of
    /// `workers`: a runtime ([`Workers`]) and the service copy connections on it use
    /// (with its own upstream pool, so a request never leaves its thread). The listening
    /// socket, the connection cap and the drain are one, shared by all of them. With no
    /// workers nothing is accepted (clients wait in the kernel's queue) until shutdown.
    pub async fn serve_on<S, B>(
        self,
        listener: TcpListener,
        workers: Vec<(tokio::runtime::Handle, S)>,
        shutdown: CancellationToken,
        drain: Duration,
    ) where
        S: ConnectionService<B>,
        B: ResponseBody,
    {
        self.serve_placed(listener, Placement::Spread(workers), shutdown, drain)
            .await;
    }

    async fn serve_placed<S, B>(
        self,
        listener: TcpListener,
        placement: Placement<S>,
        shutdown: CancellationToken,
        drain: Duration,
    ) where
        S: ConnectionService<B>,
        B: ResponseBody,
    {
        let name = self.name;
        let listener_metrics = self.metrics.for_listener(name);
        let accepting = Arc::new(Accepting {
            name,
            builders: Arc::new(Builders {
                http1: self.builder().http1_only(),
                http2: self.builder().http2_only(),
                auto: self.builder(),
            }),
            tls: self.tls.clone(),
            connections: Connections::new(
                self.limits.max_connections,
                self.metrics.for_listener(name),
            ),
            listener_metrics,
            catch_panics: self.catch_panics,
            tracker: TaskTracker::new(),
            force: CancellationToken::new(),
            timeouts: Timeouts {
                first_request: self.limits.header_read_timeout,
                idle: self.limits.idle_timeout,
                stall: self.limits.stall_timeout,
            },
            shutdown: shutdown.clone(),
        });
        match placement {
            Placement::Here(service) => {
                let here = Spread::new(vec![(tokio::runtime::Handle::current(), service)]);
                match listener.into_std().and_then(Listener::new) {
                    Ok(listener) => accepting.run(listener, 0, here).await,
                    Err(error) => {
                        tracing::error!(listener = name, %error, "could not watch the listening socket; nothing is accepted");
                        shutdown.cancelled().await;
                    }
                }
            }
            Placement::Spread(workers) => {
                Self::accept_on(&accepting, listener, workers, &shutdown).await;
            }
        }
        let tracker = &accepting.tracker;
        tracker.close();
        if tokio::time::timeout(drain, tracker.wait()).await.is_err() {
            tracing::warn!(
                listener = name,
                ?drain,
                open = tracker.len(),
                "requests still running after the drain period; closing their connections"
            );
            accepting.force.cancel();
            let _ = tokio::time::timeout(FORCE_CLOSE_GRACE, tracker.wait()).await;
        }
    }

    /// Runs an accept loop on each worker, on its own copy (`dup`) of `listener`'s socket,
    /// until `shutdown`; returns once every loop has stopped accepting.
    ///
    /// Why each worker accepts for itself: a connection accepted on one runtime and handed
    /// to another costs the handing-over thread a wake-up of the other (an `eventfd`
    /// write and a context switch per connection; it is not yet registered with either
    /// reactor, see `socket`). Sharing the one listening socket, not binding one
    /// `SO_REUSEPORT` socket per worker, keeps the port this process's alone: no other
    /// process can join it and take a share of the connections. The kernel hands each
    /// connection to one `accept`; a worker that woke for it too finds the queue empty.
    /// Whoever wakes first may find many connections queued (a client pool opening 32 at
    /// once): a worker already serving more than the least busy one hands the new
    /// connection over to it, so the connections stay spread (see [`Spread`]).
    async fn accept_on<S, B>(
        accepting: &Arc<Accepting>,
        listener: TcpListener,
        workers: Vec<(tokio::runtime::Handle, S)>,
        shutdown: &CancellationToken,
    ) where
        S: ConnectionService<B>,
        B: ResponseBody,
    {
        let name = accepting.name;
        let listener = match listener.into_std() {
            Ok(listener) => listener,
            Err(error) => {
                tracing::error!(listener = name, %error, "could not take the listening socket from the runtime; nothing is accepted");
                shutdown.cancelled().await;
                return;
            }
        };
        let spread = Spread::new(workers);
        let loops = TaskTracker::new();
        for (me, (runtime, _)) in spread.workers.iter().enumerate() {
            let copy = match listener.try_clone() {
                Ok(copy) => copy,
                Err(error) => {
                    tracing::error!(listener = name, %error, "could not share the listening socket with a worker");
                    continue;
                }
            };
            let accepting = accepting.clone();
            let spread = spread.clone();
            runtime.spawn(loops.track_future(async move {
                // Watched by this worker's reactor: its connections are born here.
                match Listener::new(copy) {
                    Ok(listener) => accepting.run(listener, me, spread).await,
                    Err(error) => {
                        tracing::error!(listener = name, %error, "a worker could not listen");
                    }
                }
            }));
        }
        loops.close();
        loops.wait().await;
        if !shutdown.is_cancelled() {
            // Every worker's loop ended (their runtimes stopped, or none could listen):
            // the port stays bound, so clients queue rather than find it closed.
            tracing::error!(listener = name, "no worker accepts connections");
            shutdown.cancelled().await;
        }
        // The last copy of the socket: the port closes here.
        drop(listener);
    }
}

/// What the accept loops of one listener share: one connection cap, one set of tasks to
/// drain, one set of settings.
struct Accepting {
    name: &'static str,
    builders: Arc<Builders>,
    tls: Option<TlsAcceptor>,
    connections: Connections,
    listener_metrics: metrics::ListenerMetrics,
    catch_panics: bool,
    /// Every connection's task, wherever it runs.
    tracker: TaskTracker,
    /// Cancelled when the drain deadline passes: every connection closes at once.
    force: CancellationToken,
    timeouts: Timeouts,
    shutdown: CancellationToken,
}

// === impl Accepting ===

impl Accepting {
    /// Accepts on `listener` until shutdown, as worker `me` of `spread`: each connection
    /// runs on this worker's runtime, or on the least busy worker's when this one serves
    /// more connections than that one (see [`Spread::place`]).
    async fn run<S, B>(&self, listener: Listener, me: usize, spread: Spread<S>)
    where
        S: ConnectionService<B>,
        B: ResponseBody,
    {
        let name = self.name;
        loop {
            let (stream, peer) = tokio::select! {
                biased;
                () = self.shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(listener = name, %error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let Some(slot) = self.connections.admit(&self.force) else {
                tracing::debug!(listener = name, %peer, "connection cap reached and every connection busy; closed");
                continue;
            };
            let at_cap = slot.at_cap();
            let worker = spread.place(me);
            let Some((runtime, service)) = spread.workers.get(worker) else {
                continue;
            };
            let conn = Conn {
                builders: self.builders.clone(),
                tls: self.tls.clone(),
                service: CatchPanic::new(
                    service.clone(),
                    self.listener_metrics.clone(),
                    self.catch_panics,
                ),
                slot,
                timeouts: self.timeouts,
                shutdown: self.shutdown.clone(),
                name,
            };
            let open = spread.open(worker);
            if worker == me {
                // Boxed: a connection's future (hyper's connection and the whole service
                // stack) is kilobytes, and unboxed every wrapper on the way into its task
                // moved all of it.
                self.tracker.spawn(Box::pin(async move {
                    let _open = open;
                    connection(conn, stream, peer).await;
                }));
            } else {
                // Not yet registered anywhere (see `socket`): if it ever waits, it joins
                // the other worker's reactor, so its readiness events wake that worker.
                runtime.spawn(self.tracker.track_future(async move {
                    let _open = open;
                    Box::pin(connection(conn, stream, peer)).await;
                }));
            }
            if at_cap {
                // Under a flood the accept queue is long and this loop never waits; give
                // the new connection a turn to read the request it has likely sent
                // already (a probe does) before more accepts make it the oldest idle one.
                tokio::task::yield_now().await;
            }
        }
    }
}

/// The workers a listener's connections run on, and how many each serves now.
///
/// Every worker accepts, and the one that woke first for a burst of connections would
/// otherwise keep all of them (and its core all their work, the other idle). So a worker
/// keeps a connection it accepted only while it serves no more than one connection over
/// the least busy worker; else it hands the connection to that worker. Steady traffic
/// that opens and closes connections is then served where it is accepted, and a burst is
/// spread as round-robin would spread it.
/// Each accept loop has its own copy (a service need not be shared between threads);
/// the counts are one.
#[derive(Clone)]
struct Spread<S> {
    workers: Vec<(tokio::runtime::Handle, S)>,
    /// Connections each worker serves (placed there and not yet ended).
    open: Arc<[Arc<AtomicUsize>]>,
}

// === impl Spread ===

impl<S> Spread<S> {
    fn new(workers: Vec<(tokio::runtime::Handle, S)>) -> Self {
        let open = workers.iter().map(|_| Arc::default()).collect();
        Self { workers, open }
    }

    /// Where a connection worker `me` accepted goes: `me`, unless it serves more than one
    /// connection over the least busy worker.
    fn place(&self, me: usize) -> usize {
        let load = |worker: usize| {
            self.open
                .get(worker)
                .map_or(usize::MAX, |open| open.load(Ordering::Relaxed))
        };
        let (least, fewest) = (0..self.open.len())
            .map(|worker| (worker, load(worker)))
            .min_by_key(|(_, open)| *open)
            .unwrap_or((me, 0));
        if load(me) > fewest.saturating_add(1) {
            least
        } else {
            me
        }
    }

    /// Counts a connection on `worker` until the returned guard drops.
    fn open(&self, worker: usize) -> Option<OpenConnection> {
        let open = self.open.get(worker)?.clone();
        open.fetch_add(1, Ordering::Relaxed);
        Some(OpenConnection(open))
    }
}

/// One connection counted on its worker (see [`Spread`]).
struct OpenConnection(Arc<AtomicUsize>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a [`Server`] serves each connection with: a service that answers every request
/// (errors are responses by then), cheap to clone, and free to move to any thread.
pub trait ConnectionService<B>:
    Service<Request<Incoming>, Response = Response<B>, Error = Infallible, Future: Send + 'static>
    + Clone
    + Send
    + 'static
{
}

impl<S, B> ConnectionService<B> for S where
    S: Service<
            Request<Incoming>,
            Response = Response<B>,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static
{
}

/// A response body a [`Server`] can write.
pub trait ResponseBody:
    http_body::Body<Data = Bytes, Error: Into<Box<dyn StdError + Send + Sync>>> + Send + 'static
{
}

impl<B> ResponseBody for B where
    B: http_body::Body<Data = Bytes, Error: Into<Box<dyn StdError + Send + Sync>>> + Send + 'static
{
}

/// Where connections are accepted and run.
enum Placement<S> {
    /// On the calling runtime, all with clones of one service.
    Here(S),
    /// On each worker runtime, with that worker's service (see [`Server::accept_on`]).
    Spread(Vec<(tokio::runtime::Handle, S)>),
}

#[derive(Clone, Copy)]
struct Timeouts {
    first_request: Duration,
    idle: Duration,
    stall: Duration,
}

/// The listener's connection builders, configured alike: one per protocol a plain
/// connection's first bytes can decide (see `sniff`), and the auto builder that reads
/// them itself (TLS, and the undecided).
struct Builders {
    auto: auto::Builder<TokioExecutor>,
    http1: auto::Builder<TokioExecutor>,
    http2: auto::Builder<TokioExecutor>,
}

impl Builders {
    fn for_protocol(&self, protocol: Option<sniff::Protocol>) -> &auto::Builder<TokioExecutor> {
        match protocol {
            Some(sniff::Protocol::Http1) => &self.http1,
            Some(sniff::Protocol::Http2) => &self.http2,
            None => &self.auto,
        }
    }
}

/// What one connection's task needs.
struct Conn<S> {
    builders: Arc<Builders>,
    tls: Option<TlsAcceptor>,
    service: S,
    slot: Slot,
    timeouts: Timeouts,
    shutdown: CancellationToken,
    name: &'static str,
}

/// Serves one connection; the slot it holds is given back when this returns.
async fn connection<S, B>(conn: Conn<S>, mut stream: Socket, peer: SocketAddr)
where
    S: ConnectionService<B>,
    B: ResponseBody,
{
    let activity = conn.slot.activity();
    // From the accept: the TLS handshake, the preface and the first head all count.
    let mut idle = pin!(activity.idle_for(conn.timeouts.first_request, conn.timeouts.idle));
    let stalled = pin!(activity.stalled_for(conn.timeouts.stall));
    // Called in place, not cloned per request (see `in_place`).
    let service = in_place::InPlace::new(Hooked::new(
        conn.service,
        Track {
            peer,
            activity: activity.clone(),
        },
    ));
    let result = match conn.tls {
        None => {
            // HTTP/1 or HTTP/2 from the first bytes, which hyper's first read is then
            // handed (see `sniff`); bounded like a TLS handshake.
            let protocol = tokio::select! {
                protocol = sniff::sniff(&mut stream) => protocol,
                () = &mut idle => return,
                () = conn.slot.closed() => return,
                () = conn.shutdown.cancelled() => return,
            };
            let io = TokioIo::new(stream);
            drive(
                Box::pin(
                    conn.builders
                        .for_protocol(protocol)
                        .serve_connection(io, service),
                ),
                idle,
                stalled,
                &conn.slot,
                &conn.shutdown,
            )
            .await
        }
        Some(tls) => {
            let handshake = tokio::select! {
                handshake = tls.accept(stream) => handshake,
                () = &mut idle => return,
                () = conn.slot.closed() => return,
                () = conn.shutdown.cancelled() => return,
            };
            let stream = match handshake {
                Ok(stream) => stream,
                Err(error) => {
                    tracing::debug!(listener = conn.name, %peer, %error, "TLS handshake failed");
                    return;
                }
            };
            drive(
                Box::pin(
                    conn.builders
                        .auto
                        .serve_connection(TokioIo::new(stream), service),
                ),
                idle,
                stalled,
                &conn.slot,
                &conn.shutdown,
            )
            .await
        }
    };
    if let Ok(Ended::Stalled) = result {
        conn.slot.stalled();
        tracing::info!(listener = conn.name, %peer, stall = ?conn.timeouts.stall, "request made no progress for the stall timeout; connection closed");
    }
    if let Err(error) = result {
        tracing::debug!(listener = conn.name, %peer, error = %error, "connection ended with an error");
    }
}

type BoxError = Box<dyn StdError + Send + Sync>;

/// How a connection ended, when not with an error.
enum Ended {
    /// Closed by the client, idled out, evicted, or drained.
    Closed,
    /// A request in flight made no progress for the stall timeout.
    Stalled,
}

/// Polls `connection` until it ends, the listener shuts down (graceful: finish what is in
/// flight), it idles out or stalls, or its slot is taken back (evicted at the cap, or the
/// drain deadline passed).
///
/// The connection (hyper's state and the service stack, kilobytes) comes boxed: built
/// once where it stays, instead of moved into this future and pinned again, a copy of
/// every byte each time, for every connection.
async fn drive<C>(
    mut connection: Pin<Box<C>>,
    mut idle: std::pin::Pin<&mut impl Future<Output = ()>>,
    mut stalled: std::pin::Pin<&mut impl Future<Output = ()>>,
    slot: &Slot,
    shutdown: &CancellationToken,
) -> Result<Ended, BoxError>
where
    C: GracefulConnection,
    C::Error: Into<BoxError>,
{
    let mut closing = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => return result.map(|()| Ended::Closed).map_err(Into::into),
            () = shutdown.cancelled(), if !closing => {
                connection.as_mut().graceful_shutdown();
                closing = true;
            }
            () = &mut idle, if !closing => break,
            // Evicted at the cap, or the drain deadline passed: close at once. An evicted
            // connection had nothing in flight, and under a flood the slot must be free
            // again before the next accept, not after a polite goodbye.
            () = slot.closed() => return Ok(Ended::Closed),
            // Whatever is in flight is going nowhere (a client that never reads): close at
            // once, dropping the stuck response and freeing the slot. Checked during a
            // graceful shutdown too, so a stalled client cannot hold the drain either.
            () = &mut stalled => return Ok(Ended::Stalled),
        }
    }
    // Nothing in flight: ask politely (an HTTP/2 client learns from the GOAWAY that no
    // stream was processed and may retry elsewhere), then just close.
    connection.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(IDLE_CLOSE_GRACE, connection.as_mut()).await;
    Ok(Ended::Closed)
}

#[cfg(test)]
mod tests;
