//! Real sockets on loopback, with short timeouts.

use std::{
    num::NonZeroUsize,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use http_body_util::Full;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::Semaphore,
};

use super::*;

/// The short timeout the tests wait out.
const SHORT: Duration = Duration::from_millis(400);
/// A timeout too long to be what a test sees.
const LONG: Duration = Duration::from_secs(30);

fn limits(max_connections: usize) -> ListenerLimits {
    timeouts(SHORT, SHORT, max_connections)
}

/// [`limits`] with its header-read and idle timeouts chosen.
fn timeouts(
    header_read_timeout: Duration,
    idle_timeout: Duration,
    max_connections: usize,
) -> ListenerLimits {
    ListenerLimits {
        header_read_timeout,
        idle_timeout,
        max_connections,
        ..ListenerLimits::default()
    }
}

/// Answers with the peer's address; `/slow` waits for a permit from `gate` first.
#[derive(Clone)]
struct Echo {
    gate: Arc<Semaphore>,
    /// Requests that reached `/slow` or `/unverified`: parsed and in flight.
    arrived: Arc<AtomicUsize>,
}

impl Service<Request<Incoming>> for Echo {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future =
        std::pin::Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        let gate = self.gate.clone();
        let arrived = self.arrived.clone();
        Box::pin(async move {
            match req.uri().path() {
                "/slow" => {
                    arrived.fetch_add(1, Ordering::SeqCst);
                    drop(gate.acquire().await);
                }
                "/panic" => panic!("a handler bug with a secret: hunter2"),
                // Where the request is served: the thread's name.
                "/thread" => {
                    let name = std::thread::current()
                        .name()
                        .unwrap_or("unnamed")
                        .to_owned();
                    return Ok(Response::new(Full::new(Bytes::from(name))));
                }
                // A sender not yet trusted: evictable while it waits.
                "/unverified" => {
                    let _evictable = req.extensions().get::<Evictable>().map(Evictable::mark);
                    arrived.fetch_add(1, Ordering::SeqCst);
                    drop(gate.acquire().await);
                }
                _ => {}
            }
            let peer = req
                .extensions()
                .get::<Peer>()
                .map_or_else(|| "none".to_owned(), |p| p.0.to_string());
            Ok(Response::new(Full::new(Bytes::from(peer))))
        })
    }
}

struct Running {
    addr: SocketAddr,
    metrics: ConnectionMetrics,
    gate: Arc<Semaphore>,
    arrived: Arc<AtomicUsize>,
    shutdown: CancellationToken,
    served: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Requests parsed and waiting in the handler (see [`Echo`]).
    fn arrived(&self) -> usize {
        self.arrived.load(Ordering::SeqCst)
    }
}

async fn start(limits: ListenerLimits, drain: Duration) -> Running {
    start_with(None, limits, drain).await
}

/// [`start`], with connections accepted and served on `workers` (each its own [`Echo`]
/// sharing one gate).
async fn start_on(workers: &Workers, limits: ListenerLimits, drain: Duration) -> Running {
    start_with(Some(workers), limits, drain).await
}

async fn start_with(workers: Option<&Workers>, limits: ListenerLimits, drain: Duration) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let metrics = ConnectionMetrics::default();
    let gate = Arc::new(Semaphore::new(0));
    let arrived = Arc::new(AtomicUsize::new(0));
    let shutdown = CancellationToken::new();
    let server = Server::new("test", &limits).with_metrics(metrics.clone());
    let echo = || Echo {
        gate: gate.clone(),
        arrived: arrived.clone(),
    };
    let served = match workers {
        None => tokio::spawn(server.serve(listener, echo(), shutdown.clone(), drain)),
        Some(workers) => {
            let services = workers
                .handles()
                .iter()
                .map(|handle| (handle.clone(), echo()))
                .collect();
            tokio::spawn(server.serve_on(listener, services, shutdown.clone(), drain))
        }
    };
    Running {
        addr,
        metrics,
        gate,
        arrived,
        shutdown,
        served,
    }
}

/// [`start`] with a drain deadline of a second.
async fn serve(limits: ListenerLimits) -> Running {
    start(limits, Duration::from_secs(1)).await
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nhost: test\r\n\r\n")
}

/// A new connection to `addr` that has sent `GET path`.
async fn send(addr: SocketAddr, path: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(get(path).as_bytes()).await.unwrap();
    stream
}

/// A connection closed at a 400 ms timeout: not before it, and not long after.
fn assert_cut_at_the_timeout(closed: Duration) {
    assert!(
        closed >= Duration::from_millis(300) && closed < Duration::from_secs(3),
        "{closed:?}"
    );
}

/// Waits for the server to close a client connection (`expect`: what it shows), and
/// checks that it took at least the 400 ms timeout.
async fn assert_closed_after_the_timeout<T>(driver: tokio::task::JoinHandle<T>, expect: &str) {
    let started = Instant::now();
    let _ = tokio::time::timeout(Duration::from_secs(3), driver)
        .await
        .expect(expect)
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));
}

/// Reads until the response's body (the peer address) arrives or the server closes.
async fn read_some(stream: &mut TcpStream) -> String {
    let mut buf = vec![0; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .expect("no answer within 5 s")
        .unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// How long until the server closes `stream` (reads and discards whatever comes first).
async fn time_to_close(stream: &mut TcpStream) -> Duration {
    let started = Instant::now();
    let mut buf = vec![0; 4096];
    loop {
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("still open after 5 s");
        if !matches!(read, Ok(n) if n > 0) {
            return started.elapsed();
        }
    }
}

async fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..200 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

/// [`wait_for`] with a check that has to await (a connection attempt, say).
async fn wait_until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..200 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn a_request_is_answered_and_sees_its_peer() {
    let running = serve(limits(8)).await;
    let mut stream = send(running.addr, "/").await;
    let local = stream.local_addr().unwrap().to_string();
    let answer = read_some(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.ends_with(&local),
        "the service saw the peer: {answer}"
    );
}

#[tokio::test]
async fn a_client_that_closes_its_sending_side_mid_request_still_gets_the_answer() {
    // The client's EOF arrives while the request is in flight: the request is not
    // dropped (its call may already be at FinCode), and its answer is still sent.
    let running = serve(limits(8)).await;
    let mut stream = send(running.addr, "/slow").await;
    wait_for("the request in flight", || running.arrived() == 1).await;
    stream.shutdown().await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    running.gate.add_permits(1);
    let answer = read_some(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_the_header_read_timeout() {
    // Nothing sent: the protocol is not known yet (the first bytes are awaited), where
    // hyper itself has no timer.
    let running = serve(timeouts(SHORT, LONG, 8)).await;
    let mut stream = TcpStream::connect(running.addr).await.unwrap();
    assert_cut_at_the_timeout(time_to_close(&mut stream).await);
    wait_for("the gauge to drop", || running.metrics.open("test") == 0).await;
}

#[tokio::test]
async fn a_trickled_head_is_cut_at_the_header_read_timeout() {
    let running = serve(timeouts(SHORT, LONG, 8)).await;
    let mut stream = TcpStream::connect(running.addr).await.unwrap();
    let started = Instant::now();
    // A byte every 50 ms: the connection is never silent, the head never complete.
    for byte in get("/").bytes().take(30).cycle() {
        if stream.write_all(&[byte]).await.is_err() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "a trickling head was not cut"
        );
        // Deliberate: a byte every 50 ms is the slow client under test.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    // hyper would also cut an idle HTTP/1 connection at its header-read timeout; make
    // that long so the idle timeout is what is seen.
    let running = serve(timeouts(LONG, SHORT, 8)).await;
    let mut stream = send(running.addr, "/").await;
    assert!(read_some(&mut stream).await.starts_with("HTTP/1.1 200"));
    assert_cut_at_the_timeout(time_to_close(&mut stream).await);
}

#[tokio::test]
async fn at_the_cap_the_oldest_idle_connection_makes_room() {
    let running = serve(timeouts(LONG, LONG, 2)).await;
    let mut oldest = TcpStream::connect(running.addr).await.unwrap();
    wait_for("the first connection", || running.metrics.open("test") == 1).await;
    let _second = TcpStream::connect(running.addr).await.unwrap();
    wait_for("the second connection", || {
        running.metrics.open("test") == 2
    })
    .await;

    let mut probe = send(running.addr, "/healthz").await;
    assert!(read_some(&mut probe).await.starts_with("HTTP/1.1 200"));
    assert!(time_to_close(&mut oldest).await < Duration::from_secs(1));
    assert_eq!(running.metrics.rejected("test", "evicted_idle"), 1);
    assert_eq!(running.metrics.open("test"), 2);
}

#[tokio::test]
async fn at_the_cap_with_every_connection_busy_the_new_one_is_closed() {
    let running = serve(limits(2)).await;
    let mut busy = Vec::new();
    for _ in 0..2 {
        busy.push(send(running.addr, "/slow").await);
    }
    wait_for("two connections", || running.metrics.open("test") == 2).await;
    wait_for("two requests in flight", || running.arrived() == 2).await;

    let mut refused = TcpStream::connect(running.addr).await.unwrap();
    assert!(time_to_close(&mut refused).await < Duration::from_secs(1));
    assert_eq!(running.metrics.rejected("test", "full"), 1);

    // The busy ones are not harmed, and not cut by the idle timeout while in flight
    // (deliberate: longer than the 400 ms idle timeout passes).
    tokio::time::sleep(Duration::from_millis(600)).await;
    running.gate.add_permits(2);
    for stream in &mut busy {
        assert!(read_some(stream).await.starts_with("HTTP/1.1 200"));
    }
}

#[tokio::test]
async fn shutdown_lets_a_request_in_flight_finish_and_stops_accepting() {
    let running = start(limits(8), Duration::from_secs(5)).await;
    assert_shutdown_drains_and_closes_the_port(running).await;
}

/// With a request in flight on `running` (5 s drain), shutdown: the port refuses new
/// connections at once, the request still gets its answer, and `serve` returns.
async fn assert_shutdown_drains_and_closes_the_port(running: Running) {
    let mut stream = send(running.addr, "/slow").await;
    wait_for("the request in flight", || running.arrived() == 1).await;
    running.shutdown.cancel();
    wait_until("no longer accepting", async || {
        TcpStream::connect(running.addr).await.is_err()
    })
    .await;
    running.gate.add_permits(1);
    let answer = read_some(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    tokio::time::timeout(Duration::from_secs(2), running.served)
        .await
        .expect("serve returned after the drain")
        .unwrap();
}

#[tokio::test]
async fn a_request_still_running_at_the_drain_deadline_is_cut() {
    let running = start(limits(8), Duration::from_millis(300)).await;
    let mut stream = send(running.addr, "/slow").await;
    wait_for("the request in flight", || running.arrived() == 1).await;
    let started = Instant::now();
    running.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(3), running.served)
        .await
        .expect("serve returned at the drain deadline")
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(time_to_close(&mut stream).await < Duration::from_secs(1));
}

#[tokio::test]
async fn a_head_whose_first_byte_does_not_decide_the_protocol_is_still_answered() {
    // `P` starts POST and PUT as well as HTTP/2's preface: the first bytes seen leave
    // the protocol open, and the auto builder reads on.
    let running = serve(limits(8)).await;
    let mut stream = TcpStream::connect(running.addr).await.unwrap();
    stream.write_all(b"P").await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    stream
        .write_all(b"OST / HTTP/1.1\r\nhost: test\r\ncontent-length: 0\r\n\r\n")
        .await
        .unwrap();
    let answer = read_some(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn an_http2_preface_split_in_two_is_still_answered() {
    let running = serve(limits(8)).await;
    let mut stream = TcpStream::connect(running.addr).await.unwrap();
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    stream.write_all(&preface[..10]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    stream.write_all(&preface[10..]).await.unwrap();
    // The client's SETTINGS (empty): the server answers with its own SETTINGS frame.
    stream
        .write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0])
        .await
        .unwrap();
    let mut frame = [0_u8; 9];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut frame))
        .await
        .expect("no HTTP/2 answer within 5 s")
        .unwrap();
    assert_eq!(frame[3], 4, "a SETTINGS frame first: {frame:?}");
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed_after_the_idle_timeout() {
    let running = serve(timeouts(LONG, SHORT, 8)).await;
    let stream = TcpStream::connect(running.addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    let driver = tokio::spawn(connection);
    let request = Request::get("http://test/")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    drop(response);
    assert_closed_after_the_timeout(driver, "the idle HTTP/2 connection was closed").await;
    wait_for("the gauge to drop", || running.metrics.open("test") == 0).await;
}

#[tokio::test]
async fn a_silent_tls_client_is_closed_after_the_header_read_timeout() {
    // A TLS acceptor that is never completed: the client connects and sends nothing.
    let running = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(Arc::new(
            tokio_rustls::rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(NoCert));
        let server = Server::new("tls", &timeouts(SHORT, LONG, 8))
            .with_tls(Some(TlsAcceptor::from(Arc::new(config))));
        tokio::spawn(server.serve(
            listener,
            Echo {
                gate: Arc::new(Semaphore::new(0)),
                arrived: Arc::default(),
            },
            CancellationToken::new(),
            Duration::from_secs(1),
        ));
        addr
    };
    let mut stream = TcpStream::connect(running).await.unwrap();
    assert_cut_at_the_timeout(time_to_close(&mut stream).await);
}

/// Never offers a certificate; the handshake never gets that far in the test anyway.
#[derive(Debug)]
struct NoCert;

impl tokio_rustls::rustls::server::ResolvesServerCert for NoCert {
    fn resolve(
        &self,
        _: tokio_rustls::rustls::server::ClientHello<'_>,
    ) -> Option<Arc<tokio_rustls::rustls::sign::CertifiedKey>> {
        None
    }
}

/// A connection's activity with one request in flight from now, and now.
fn one_in_flight() -> (Arc<crate::connections::Activity>, tokio::time::Instant) {
    let activity = Arc::new(crate::connections::Activity::new());
    let started = tokio::time::Instant::now();
    activity.request_started();
    (activity, started)
}

#[tokio::test(start_paused = true)]
async fn idle_means_no_request_in_flight_for_the_whole_timeout() {
    use crate::connections::Activity;
    let (first, between) = (Duration::from_secs(10), Duration::from_mins(1));

    // Never used: closed `first` after opening.
    let unused = Activity::new();
    let started = tokio::time::Instant::now();
    unused.idle_for(first, between).await;
    assert_eq!(started.elapsed(), first);

    // A request running far longer than both timeouts is never idle; `between` counts
    // from its end.
    let (busy, started) = one_in_flight();
    let ender = {
        let busy = busy.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_mins(5)).await;
            busy.request_ended();
        })
    };
    busy.idle_for(first, between).await;
    ender.await.unwrap();
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_mins(6) && elapsed <= Duration::from_secs(361),
        "{elapsed:?}"
    );
}

#[tokio::test]
async fn an_http2_client_that_never_reads_its_response_is_closed_after_the_stall_timeout() {
    let running = serve(ListenerLimits {
        stall_timeout: Duration::from_millis(500),
        ..timeouts(LONG, LONG, 8)
    })
    .await;
    let stream = TcpStream::connect(running.addr).await.unwrap();
    // A window of 0: the server may send the head but never a byte of the body, while the
    // client keeps answering PINGs.
    let (client, connection) = h2::client::Builder::new()
        .initial_window_size(0)
        .handshake::<_, Bytes>(stream)
        .await
        .unwrap();
    let driver = tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let (response, _) = client
        .send_request(Request::get("http://test/").body(()).unwrap(), true)
        .unwrap();
    let response = response.await.unwrap();
    assert_eq!(response.status(), 200);
    wait_for("the connection to count", || {
        running.metrics.open("test") == 1
    })
    .await;

    assert_closed_after_the_timeout(driver, "the stalled HTTP/2 connection was closed").await;
    wait_for("the slot to be freed", || running.metrics.open("test") == 0).await;
    assert_eq!(running.metrics.stalled("test"), 1);
    drop(response);
}

#[tokio::test(start_paused = true)]
async fn stalled_means_in_flight_with_no_progress_for_the_whole_timeout() {
    use crate::connections::Activity;
    let stall = Duration::from_secs(10);
    let (activity, started) = one_in_flight();
    // Progress every 5 s for a minute keeps it alive; then it stops.
    let worker = {
        let activity = activity.clone();
        tokio::spawn(async move {
            for _ in 0..12 {
                tokio::time::sleep(Duration::from_secs(5)).await;
                activity.progress();
            }
        })
    };
    activity.stalled_for(stall).await;
    worker.await.unwrap();
    assert_eq!(started.elapsed(), Duration::from_secs(70));

    // Idle (nothing in flight) is never stalled.
    let idle = Activity::new();
    assert!(
        tokio::time::timeout(Duration::from_mins(10), idle.stalled_for(stall))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn at_the_cap_with_none_idle_the_oldest_unverified_request_makes_room() {
    let running = serve(timeouts(LONG, LONG, 3)).await;
    // One busy with a trusted request, two with unverified ones (the older first).
    let mut busy = send(running.addr, "/slow").await;
    let mut unverified = Vec::new();
    for _ in 0..2 {
        let stream = send(running.addr, "/unverified").await;
        wait_for("the connection", || {
            running.metrics.open("test") == 2 + i64::try_from(unverified.len()).unwrap()
        })
        .await;
        unverified.push(stream);
    }
    wait_for("three connections", || running.metrics.open("test") == 3).await;
    wait_for("three requests in flight", || running.arrived() == 3).await;

    let mut probe = send(running.addr, "/healthz").await;
    assert!(read_some(&mut probe).await.starts_with("HTTP/1.1 200"));
    assert!(time_to_close(&mut unverified[0]).await < Duration::from_secs(1));
    assert_eq!(running.metrics.rejected("test", "evicted_unverified"), 1);
    assert_eq!(running.metrics.rejected("test", "full"), 0);

    // The trusted one and the younger unverified one are unharmed.
    running.gate.add_permits(2);
    assert!(read_some(&mut busy).await.starts_with("HTTP/1.1 200"));
    assert!(
        read_some(&mut unverified[1])
            .await
            .starts_with("HTTP/1.1 200")
    );
}

#[tokio::test]
async fn a_panicking_handler_answers_500_without_its_message_and_is_counted() {
    let running = serve(limits(8)).await;
    let mut stream = send(running.addr, "/panic").await;
    let answer = read_some(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 500"), "{answer:?}");
    assert!(!answer.contains("hunter2"), "{answer}");
    assert_eq!(running.metrics.panics("test"), 1);
    // The connection, and the listener, keep serving.
    stream.write_all(get("/").as_bytes()).await.unwrap();
    assert!(read_some(&mut stream).await.starts_with("HTTP/1.1 200"));
}

/// Two worker runtimes, on threads `egress-test-0` and `egress-test-1`.
fn two_workers() -> Workers {
    Workers::start(NonZeroUsize::new(2).unwrap(), "egress-test").unwrap()
}

/// Shuts `running` down, waits for it, then stops `workers`.
async fn stop_both(running: Running, workers: Workers) {
    running.shutdown.cancel();
    running.served.await.unwrap();
    workers.stop().await;
}

/// The name of the thread that served a request on a new connection to `addr`.
async fn served_by(addr: SocketAddr) -> String {
    let mut stream = send(addr, "/thread").await;
    let answer = read_some(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    answer.rsplit("\r\n").next().unwrap_or_default().to_owned()
}

/// Keeps worker `index`'s thread busy (not yielding) for `busy`.
fn occupy(workers: &Workers, index: usize, busy: Duration) {
    workers.handles()[index].spawn(async move { std::thread::sleep(busy) });
}

#[tokio::test]
async fn every_worker_accepts_and_serves_its_own_connections() {
    let workers = two_workers();
    let running = start_on(&workers, limits(8), Duration::from_secs(1)).await;
    // With one worker's thread held up, the other accepts every new connection, and
    // serves it on its own thread; then the other way round.
    for (held, serving) in [(0, "egress-test-1"), (1, "egress-test-0")] {
        occupy(&workers, held, Duration::from_millis(1500));
        tokio::time::sleep(Duration::from_millis(50)).await;
        for _ in 0..3 {
            // One connection at a time (the last one closed): the accepting worker keeps it.
            wait_for("no connection open", || running.metrics.open("test") == 0).await;
            assert_eq!(served_by(running.addr).await, serving);
        }
        // The held worker catches up (on connections it woke for too, and found taken).
        tokio::time::sleep(Duration::from_millis(1600)).await;
    }
    stop_both(running, workers).await;
}

#[tokio::test]
async fn workers_share_one_connection_cap() {
    let workers = two_workers();
    let running = start_on(&workers, limits(2), Duration::from_secs(1)).await;
    // Each busy connection accepted by a different worker.
    let mut busy = Vec::new();
    for held in [0, 1] {
        occupy(&workers, held, Duration::from_millis(500));
        tokio::time::sleep(Duration::from_millis(50)).await;
        busy.push(send(running.addr, "/slow").await);
        wait_for("the request in flight", || running.arrived() == busy.len()).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    wait_for("two connections", || running.metrics.open("test") == 2).await;

    // Whichever worker accepts the third, the cap is the listener's: closed at once.
    let mut refused = TcpStream::connect(running.addr).await.unwrap();
    assert!(time_to_close(&mut refused).await < Duration::from_secs(1));
    assert_eq!(running.metrics.rejected("test", "full"), 1);
    running.gate.add_permits(2);
    for stream in &mut busy {
        assert!(read_some(stream).await.starts_with("HTTP/1.1 200"));
    }
    stop_both(running, workers).await;
}

#[tokio::test]
async fn on_workers_shutdown_stops_accepting_everywhere_and_drains() {
    let workers = two_workers();
    let running = start_on(&workers, limits(8), Duration::from_secs(5)).await;
    // Every worker's copy of the listening socket is closed: the port refuses.
    assert_shutdown_drains_and_closes_the_port(running).await;
    workers.stop().await;
}

#[tokio::test]
async fn a_burst_accepted_by_one_worker_is_spread_over_both() {
    let workers = two_workers();
    let running = start_on(&workers, timeouts(LONG, LONG, 64), Duration::from_secs(1)).await;
    // Worker 1 is held while eight connections arrive: worker 0 accepts them all, keeps
    // a connection while it serves at most one more than worker 1, and hands the others
    // over (they are answered once worker 1 is free): kept, kept, handed, kept, handed,
    // kept, handed, kept.
    occupy(&workers, 1, Duration::from_millis(800));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut streams = Vec::new();
    for _ in 0..8 {
        streams.push(send(running.addr, "/thread").await);
    }
    let mut served = std::collections::BTreeMap::<String, usize>::new();
    for stream in &mut streams {
        let answer = read_some(stream).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let thread = answer.rsplit("\r\n").next().unwrap_or_default().to_owned();
        *served.entry(thread).or_default() += 1;
    }
    assert_eq!(
        served,
        [
            ("egress-test-0".to_owned(), 5),
            ("egress-test-1".to_owned(), 3)
        ]
        .into(),
        "the connections by the worker that served them"
    );
    drop(streams);
    stop_both(running, workers).await;
}
