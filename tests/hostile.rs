//! Hostile clients against the real binary: thousands of idle connections and hundreds
//! trickling a byte a second at each listener, while the app's calls, the probes and a
//! signed FinCode webhook still answer promptly; then the slow connections are closed
//! by the header-read timeout (or sooner, evicted at the connection cap).
#![allow(clippy::unwrap_used)]

mod support;

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use fincode_sandbox::{SendWebhooks, transaction_status_event};
use support::*;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    task::JoinHandle,
};

/// What the brief asks for; scaled down (loudly) when the fd limit is lower.
const IDLE: usize = 2000;
const TRICKLING: usize = 500;

/// Short, so the test sees slow connections closed.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(2);

/// How fast a probe, an app call or a signed webhook must be answered under the flood.
const PROMPT: Duration = Duration::from_secs(2);

const SECRET: &str = "fincode-webhook-secret-for-tests";

struct Setup {
    sandbox: TestSandbox,
    _app: TestApp,
    sidecar: Sidecar,
    _dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    setup_with(|b| b).await
}

async fn setup_with(adjust: impl FnOnce(SidecarBuilder) -> SidecarBuilder) -> Setup {
    let sandbox = TestSandbox::start().await;
    let app = TestApp::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut builder = SidecarBuilder::with_static_token(&sandbox)
        .webhooks(&app.url(), SECRET, &dir.path().join("events.db"))
        // Thousands of connection lines at debug would only slow the test down.
        .set("log.level", "info");
    for listener in ["egress", "admin", "webhooks"] {
        builder = builder.set(&format!("listeners.{listener}.header_read_timeout"), "2s");
    }
    let sidecar = adjust(builder).start_ready().await;
    Setup {
        sandbox,
        _app: app,
        sidecar,
        _dir: dir,
    }
}

/// The soft limit on open files, from /proc (no unsafe `getrlimit` needed).
fn open_files_limit() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| {
            let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
            line.split_whitespace().nth(3)?.parse().ok()
        })
        .unwrap_or(1024)
}

/// `(idle, trickling)` connections this process can afford: three tests may run at once.
fn flood_size() -> (usize, usize) {
    let budget = open_files_limit().saturating_sub(200) / 3;
    if budget >= IDLE + TRICKLING {
        return (IDLE, TRICKLING);
    }
    let scale = budget as f64 / (IDLE + TRICKLING) as f64;
    let scaled = (
        (IDLE as f64 * scale) as usize,
        (TRICKLING as f64 * scale) as usize,
    );
    eprintln!(
        "!!! open-files limit {} is too low for {IDLE} idle + {TRICKLING} trickling connections \
         per listener; using {scaled:?} (raise `ulimit -n` for the full test)",
        open_files_limit()
    );
    scaled
}

/// A connection of the flood; resolves to how long the sidecar kept it open after it
/// connected (`None`: still open after 30 s).
type Held = JoinHandle<Option<Duration>>;

/// Opens `idle` connections that send nothing and `trickling` ones that send `head` a byte
/// a second (after `preamble`, sent at once), in batches so the accept queue keeps up.
async fn flood(
    addr: SocketAddr,
    idle: usize,
    trickling: usize,
    preamble: &'static [u8],
    trickle: &'static [u8],
) -> Vec<Held> {
    let mut held = Vec::with_capacity(idle + trickling);
    let kinds = std::iter::repeat_n(false, idle).chain(std::iter::repeat_n(true, trickling));
    let kinds: Vec<bool> = kinds.collect();
    for batch in kinds.chunks(100) {
        let connects = batch
            .iter()
            .map(|&trickles| async move { (trickles, TcpStream::connect(addr).await) });
        for (trickles, stream) in futures_util::future::join_all(connects).await {
            let Ok(stream) = stream else {
                // Refused outright counts as closed at once.
                held.push(tokio::spawn(async { Some(Duration::ZERO) }));
                continue;
            };
            held.push(tokio::spawn(hold(stream, trickles, preamble, trickle)));
        }
    }
    held
}

async fn hold(
    mut stream: TcpStream,
    trickles: bool,
    preamble: &'static [u8],
    trickle: &'static [u8],
) -> Option<Duration> {
    let connected = Instant::now();
    let (mut read, mut write) = stream.split();
    let closed = async {
        let mut buf = [0; 1024];
        loop {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    let writes = async {
        if !trickles {
            return std::future::pending().await;
        }
        if write.write_all(preamble).await.is_err() {
            return;
        }
        for byte in trickle.iter().cycle() {
            if write.write_all(&[*byte]).await.is_err() {
                return;
            }
            // Deliberate: a byte a second is the slow client under test.
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    };
    let until_closed = async {
        tokio::select! {
            () = closed => {},
            () = writes => {},
        }
    };
    tokio::time::timeout(Duration::from_secs(30), until_closed)
        .await
        .ok()
        .map(|()| connected.elapsed())
}

/// Asserts the egress, the admin port and the webhook listener all answer within PROMPT.
async fn everything_answers_promptly(s: &Setup, during: &str) {
    let started = Instant::now();
    let health = tokio::time::timeout(PROMPT, get(&app_client(), &s.sidecar.admin_url("/healthz")))
        .await
        .unwrap_or_else(|_| panic!("{during}: /healthz took over {PROMPT:?}"));
    assert_eq!(health.status, 200, "{during}: /healthz");

    let call = tokio::time::timeout(
        PROMPT,
        get(
            &app_client(),
            &s.sidecar
                .url("/transactionmanagement/transactions?page=0&size=10"),
        ),
    )
    .await
    .unwrap_or_else(|_| panic!("{during}: the app's call took over {PROMPT:?}"));
    assert_eq!(call.status, 200, "{during}: the app's call");

    let reference = format!("PCN{:010}", started.elapsed().as_nanos() % 10_000_000_000);
    let batch = SendWebhooks {
        url: s.sidecar.webhook_url("/webhooks/fincode"),
        signing: hmac_signing(SECRET),
        events: vec![transaction_status_event(&reference, "PAID")],
        copies: 1,
        concurrency: 1,
        tamper: false,
        timestamp_offset_secs: 0,
        extra_headers: Vec::new(),
    };
    let sent = tokio::time::timeout(PROMPT, s.sandbox.send_webhooks(batch))
        .await
        .unwrap_or_else(|_| panic!("{during}: the signed webhook took over {PROMPT:?}"));
    assert_eq!(
        sent[0].status,
        Some(200),
        "{during}: the signed webhook: {sent:?}"
    );
}

/// Every flood connection is closed by the header-read timeout (plus slack), or sooner.
async fn all_closed(held: Vec<Held>, what: &str) {
    let mut longest = Duration::ZERO;
    let mut open = 0;
    for held in held {
        match held.await.unwrap() {
            Some(after) => longest = longest.max(after),
            None => open += 1,
        }
    }
    assert_eq!(open, 0, "{what}: {open} connections still open after 30 s");
    // A connection may wait in the kernel's accept queue before the sidecar sees it;
    // allow for that on a busy machine.
    assert!(
        longest < HEADER_READ_TIMEOUT + Duration::from_secs(6),
        "{what}: the slowest was closed after {longest:?}"
    );
}

const TRICKLED_HEAD: &[u8] =
    b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_port_survives_idle_and_trickling_floods() {
    let s = setup().await;
    let (idle, trickling) = flood_size();
    let held = flood(s.sidecar.admin_addr(), idle, trickling, b"", TRICKLED_HEAD).await;
    everything_answers_promptly(&s, "admin flood").await;

    let metrics = s.sidecar.scrape().await;
    assert!(
        metric_value_labelled(
            &metrics,
            "fincode_listener_connections_rejected_total",
            "evicted_idle"
        ) > 0.0,
        "the admin cap (64) made room by closing idle connections:\n{metrics}"
    );
    all_closed(held, "admin").await;
    let metrics = s.sidecar.scrape().await;
    let open = metrics
        .lines()
        .find(|l| l.starts_with("fincode_listener_connections{listener=\"admin\"}"))
        .and_then(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .unwrap();
    assert!(open <= 2.0, "admin connections left open: {open}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_egress_port_survives_idle_and_trickling_floods() {
    let s = setup().await;
    let (idle, trickling) = flood_size();
    let held = flood(s.sidecar.egress_addr(), idle, trickling, b"", TRICKLED_HEAD).await;
    everything_answers_promptly(&s, "egress flood").await;
    all_closed(held, "egress").await;
    everything_answers_promptly(&s, "after the egress flood").await;
}

/// Connections trickling unsigned bodies, more than the webhook listener's cap.
const TRICKLED_BODIES: usize = 200;
const WEBHOOK_CAP: i64 = 64;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_listener_acks_a_signed_event_under_trickled_unsigned_bodies() {
    let s = setup_with(|b| {
        b.set("listeners.webhooks.max_connections", WEBHOOK_CAP)
            .set("webhooks.body_read_timeout", "4s")
    })
    .await;
    let (idle, trickling) = flood_size();
    let addr = s.sidecar.webhook_addr();
    // Unsigned bodies declared large (within max_body_bytes), sent a byte a second: each
    // request is in flight, and there are more of them than the cap. At the cap the
    // oldest unverified one is evicted; a signed event is never refused as `full`.
    let bodies = flood(
        addr,
        0,
        TRICKLED_BODIES,
        b"POST /webhooks/fincode HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 60000\r\n\r\n",
        b"{\"eventType\":\"TRANSACTION_STATUS\"",
    )
    .await;
    everything_answers_promptly(&s, "webhook bodies trickling over the cap").await;
    let heads = flood(addr, idle, trickling.min(100), b"", TRICKLED_HEAD).await;
    everything_answers_promptly(&s, "webhook flood").await;
    all_closed(heads, "webhook idle and trickled heads").await;
    let metrics = s.sidecar.scrape().await;
    assert!(
        metric_value_labelled(
            &metrics,
            "fincode_listener_connections_rejected_total",
            "evicted_unverified"
        ) > 0.0,
        "the webhook cap ({WEBHOOK_CAP}) made room by closing unverified bodies:\n{metrics}"
    );
    assert!(
        metric_value_labelled(
            &metrics,
            "fincode_webhooks_rejected_total",
            "unverified_budget"
        ) < 1.0,
        "a byte a second never fills the unverified budget"
    );
    // The bodies left are cut by webhooks.body_read_timeout at the latest.
    all_closed(bodies, "webhook trickled bodies").await;
}

#[tokio::test]
async fn unverified_bodies_over_the_budget_get_503_with_retry_after() {
    let s = setup_with(|b| b.set("webhooks.max_unverified_bytes", 65536)).await;
    let addr = s.sidecar.webhook_addr();
    let head = |len: usize| {
        format!(
            "POST /webhooks/fincode HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
             content-length: {len}\r\n\r\n"
        )
    };
    // 60 000 of a declared 65 000 bytes arrive, then nothing: the budget holds them.
    let mut hog = TcpStream::connect(addr).await.unwrap();
    hog.write_all(head(65_000).as_bytes()).await.unwrap();
    hog.write_all(&vec![b' '; 60_000]).await.unwrap();
    // Time for the listener to read them into its budget: nothing (no metric, no log) shows
    // bytes held, so this waits rather than watches.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut over = TcpStream::connect(addr).await.unwrap();
    over.write_all(head(10_000).as_bytes()).await.unwrap();
    over.write_all(&vec![b' '; 10_000]).await.unwrap();
    let mut answer = vec![0; 4096];
    let n = tokio::time::timeout(PROMPT, over.read(&mut answer))
        .await
        .expect("answered promptly")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]).to_ascii_lowercase();
    assert!(answer.starts_with("http/1.1 503"), "{answer}");
    assert!(answer.contains("retry-after: 1"), "{answer}");

    // Once the hog is gone, its bytes are free again: a signed event is acknowledged.
    drop(hog);
    // Time for the listener to see the close and release them (unobservable, as above).
    tokio::time::sleep(Duration::from_millis(300)).await;
    everything_answers_promptly(&s, "after the hog left").await;
    let metrics = s.sidecar.scrape().await;
    assert!(
        metric_value_labelled(
            &metrics,
            "fincode_webhooks_rejected_total",
            "unverified_budget"
        ) >= 1.0
    );
}
