//! Ingest throughput of the stores: concurrent `insert`s of distinct FinCode-like
//! events (a ~600-byte JSON body, three headers), each committed durably before it
//! returns (SQLite `synchronous=FULL`; Postgres `synchronous_commit=on`), as on the
//! webhook acknowledgement path.
//!
//! The Postgres group runs against `FINCODE_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`) in a schema of its own, dropped after; it
//! is skipped, saying so, without a server.
//!
//! `cargo bench -p fincode-store --bench ingest -- --warm-up-time 1 --measurement-time 5 --noplot`
//!
//! The file lives in a temporary directory under `target/` (a real disk, unlike a
//! tmpfs `/tmp`, where fsync costs nothing and the numbers would flatter).

#![allow(clippy::unwrap_used)] // a benchmark: a failure should stop it loudly

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fincode_store::{
    EventStore, Inserted, NewEvent, PostgresOptions, PostgresStore, PostgresTls, SqliteStore,
};

/// Events per benchmark iteration (criterion's "element" is one event).
const EVENTS_PER_ITERATION: u64 = 1024;

fn sample(n: u64) -> NewEvent {
    let reference = format!("PCN{n:012}");
    let body = format!(
        r#"{{"eventType":"TRANSACTION_STATUS","Reference":"{reference}","Status":"PAID","msgCode":"00","transactionId":"{n}","amountSent":"150000.00","currencySent":"JPY","amountReceived":"1000.00","currencyReceived":"USD","beneficiaryFullName":"Taro Yamada","beneficiaryAccount":"1234567890","beneficiaryBank":"Example Bank","senderFullName":"Hanako Suzuki","purpose":"Family support","createdAt":"2026-05-01T12:34:56.789Z","updatedAt":"2026-05-01T12:35:10.123Z","fee":"500.00","exchangeRate":"150.000000","channel":"BANK_TRANSFER","remarks":"benchmark event padding padding padding padding padding padding padding"}}"#
    );
    NewEvent {
        dedupe_key: format!("TRANSACTION_STATUS:{reference}:PAID"),
        order_key: Some(reference),
        correlation_id: format!("01890f6e-7c2b-7a4e-9d1a-{n:012}"),
        body: Bytes::from(body),
        headers: vec![
            ("content-type".to_owned(), "application/json".to_owned()),
            (
                "x-fincode-signature".to_owned(),
                "sha256=9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
                    .to_owned(),
            ),
            ("user-agent".to_owned(), "FinCode-Webhook/1.0".to_owned()),
        ],
        received_at: SystemTime::now(),
    }
}

/// `tasks` concurrent tasks insert `total` distinct events between them, each task
/// one insert at a time (like one webhook request each); returns the elapsed time.
async fn ingest(
    store: &Arc<dyn EventStore>,
    next: &Arc<AtomicU64>,
    tasks: u64,
    total: u64,
) -> Duration {
    let start = Instant::now();
    let workers: Vec<_> = (0..tasks)
        .map(|task| {
            let store = Arc::clone(store);
            let next = Arc::clone(next);
            let share = total / tasks + u64::from(task < total % tasks);
            tokio::spawn(async move {
                for _ in 0..share {
                    let event = sample(next.fetch_add(1, Ordering::Relaxed));
                    let inserted = store.insert(event).await.unwrap();
                    assert!(matches!(inserted, Inserted::New(_)));
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    start.elapsed()
}

fn bench_ingest(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target");
    std::fs::create_dir_all(&target).unwrap();
    let dir = tempfile::tempdir_in(&target).unwrap();
    let store: Arc<dyn EventStore> =
        Arc::new(SqliteStore::open(&dir.path().join("ingest.db")).unwrap());
    let next = Arc::new(AtomicU64::new(0));
    assert_eq!(sample(0).body.len() / 100, 6, "a ~600-byte body");

    let mut group = c.benchmark_group("sqlite_ingest");
    group.throughput(Throughput::Elements(EVENTS_PER_ITERATION));
    for tasks in [64, 1] {
        // One task at a time is one fsync per event: slow, so fewer samples.
        group.sample_size(if tasks == 1 { 10 } else { 100 });
        group.bench_function(format!("insert_{tasks}_concurrent"), |b| {
            b.iter_custom(|iterations| {
                let total = iterations * EVENTS_PER_ITERATION;
                runtime.block_on(ingest(&store, &next, tasks, total))
            });
        });
    }
    group.finish();
    bench_postgres_ingest(c, &runtime, &next);
}

/// Connections in the benchmark's pool: the sidecar's default would be similar.
const POSTGRES_POOL: usize = 16;

fn bench_postgres_ingest(
    c: &mut Criterion,
    runtime: &tokio::runtime::Runtime,
    next: &Arc<AtomicU64>,
) {
    let url = std::env::var("FINCODE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let schema = format!("fincode_bench_{}", uuid::Uuid::now_v7().simple());
    let admin = runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        Ok::<_, tokio_postgres::Error>(client)
    });
    let admin = match admin {
        Ok(admin) => admin,
        Err(error) => {
            eprintln!("SKIPPING postgres_ingest: no server at {url} ({error})");
            return;
        }
    };
    let store: Arc<dyn EventStore> = Arc::new(
        runtime
            .block_on(PostgresStore::connect(PostgresOptions {
                url: url.clone(),
                password: None,
                tls: PostgresTls::Disable,
                pool_size: POSTGRES_POOL,
                schema: schema.clone(),
            }))
            .unwrap(),
    );
    let mut group = c.benchmark_group("postgres_ingest");
    group.throughput(Throughput::Elements(EVENTS_PER_ITERATION));
    group.bench_function("insert_64_concurrent", |b| {
        b.iter_custom(|iterations| {
            let total = iterations * EVENTS_PER_ITERATION;
            runtime.block_on(ingest(&store, next, 64, total))
        });
    });
    group.finish();
    drop(store);
    runtime
        .block_on(admin.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")))
        .unwrap();
}

criterion_group!(benches, bench_ingest);
criterion_main!(benches);
