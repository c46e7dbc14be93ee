//! Webhook ingest: signed events POSTed over loopback HTTP/1.1 keep-alive to the real
//! listener, which verifies the HMAC over the raw body, commits each event to a real
//! SQLite file (WAL, synchronous=FULL, group commit) and answers 200. One element is one
//! acknowledged event; every event is distinct, so none is a cheap duplicate.
//!
//! The dispatcher does not run: this measures the ack path alone (DESIGN.md 7: ≥ 10 000
//! events/s on SQLite).

#![allow(clippy::unwrap_used)] // A benchmark: a failure should stop it loudly.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fincode_config::{Config, Env};
use fincode_store::{EventStore, SqliteStore};
use fincode_webhooks::{
    Webhooks,
    verify::{Algorithm, Encoding, Scheme, sign},
};
use http::{HeaderName, HeaderValue, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use secrecy::SecretString;

const SECRET: &str = "bench-webhook-secret";
const IN_FLIGHT: usize = 64;

fn ingest(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = runtime.block_on(start(&dir));
    let scheme = Scheme::Hmac {
        algorithm: Algorithm::Sha256,
        encoding: Encoding::Hex,
        header: HeaderName::from_static("x-fincode-signature"),
        prefix: String::new(),
    };
    let secret = SecretString::from(SECRET);
    let next = Arc::new(AtomicU64::new(0));
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(IN_FLIGHT)
        .build_http::<Full<Bytes>>();

    let mut group = c.benchmark_group("webhook_ingest");
    group.throughput(Throughput::Elements(1));
    group.sample_size(10);
    group.bench_function("hmac_sqlite_64_in_flight", |b| {
        b.iter_custom(|iters| {
            // Sign outside the timed part: the sender's work is not ours.
            let requests: Vec<_> = (0..iters)
                .map(|_| {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    let body = Bytes::from(event(n));
                    let headers = sign(&scheme, &secret, &body, SystemTime::now(), "m").unwrap();
                    (body, headers)
                })
                .collect();
            runtime.block_on(async {
                let started = Instant::now();
                let mut chunks = requests.into_iter();
                let mut tasks = tokio::task::JoinSet::new();
                loop {
                    while tasks.len() < IN_FLIGHT {
                        let Some((body, headers)) = chunks.next() else {
                            break;
                        };
                        let client = client.clone();
                        let url = url.clone();
                        tasks.spawn(async move { post(&client, &url, body, headers).await });
                    }
                    match tasks.join_next().await {
                        Some(status) => assert_eq!(status.unwrap(), 200),
                        None => break,
                    }
                }
                started.elapsed()
            })
        });
    });
    group.finish();
}

async fn post(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    url: &str,
    body: Bytes,
    headers: Vec<(HeaderName, HeaderValue)>,
) -> u16 {
    let mut request = Request::post(url).header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let response = client
        .request(request.body(Full::new(body)).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let _ = response.into_body().collect().await;
    status
}

/// A FinCode TRANSACTION_STATUS event (about 330 bytes), distinct per `n`.
fn event(n: u64) -> Vec<u8> {
    format!(
        r#"{{"eventType":"TRANSACTION_STATUS","Reference":"PCN{n:010}","Status":"PAID","msgCode":"00","transactionId":"TXN-{n}","amountSent":250000,"currency":"NGN","beneficiaryFullName":"Bench Beneficiary","beneficiaryAccountNumber":"0123456789","narration":"Invoice {n}","createdAt":"2026-11-25T10:00:00Z"}}"#
    )
    .into_bytes()
}

/// The listener on a loopback port over a fresh SQLite file; returns its URL.
async fn start(dir: &tempfile::TempDir) -> String {
    let mut config =
        Config::with_base_url("https://acme.fincode.tech/api/v6/services".parse().unwrap());
    config.webhooks.enabled = true;
    config.webhooks.secret_envs = vec!["BENCH_SECRET".to_owned()];
    config.webhooks.deliver_to = Some("http://127.0.0.1:9/".parse().unwrap());
    config.webhooks.signing_secret_env = Some("BENCH_SIGNING".to_owned());
    let env = Env::from_pairs([
        ("BENCH_SECRET", SECRET),
        ("BENCH_SIGNING", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
    ]);
    let store: Arc<dyn EventStore> =
        Arc::new(SqliteStore::open(&dir.path().join("ingest.db")).unwrap());
    let webhooks = Webhooks::from_config(
        &config,
        &env,
        config.listen.egress,
        store,
        fincode_redact::Redactor::default(),
        &mut prometheus_client::registry::Registry::default(),
        None,
    )
    .unwrap()
    .unwrap();
    let (listener, _dispatcher) = webhooks.into_parts();
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let server = fincode_server::Server::new("webhooks", &config.listeners.webhooks);
    tokio::spawn(listener.serve(
        server,
        socket,
        fincode_server::CancellationToken::new(),
        Duration::from_secs(1),
    ));
    format!("http://{addr}/webhooks/fincode")
}

criterion_group!(benches, ingest);
criterion_main!(benches);
