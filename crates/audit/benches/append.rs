//! Audit appends with group commit: a batch of records appended to the chain, then one
//! fsync, as the writer thread does. Target (DESIGN.md 7): at least 50 000 records/s.
#![allow(clippy::unwrap_used, missing_docs)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fincode_audit::ChainWriter;
use serde_json::{Map, Value, json};

fn record(n: u64) -> Map<String, Value> {
    match json!({
        "kind": "request",
        "time_ms": 1_795_000_000_000_u64 + n,
        "correlation_id": "0190f3c2-7b1e-7c3a-9d4e-5f6a7b8c9d0e",
        "actor": "merchant-app",
        "peer": "127.0.0.1:51234",
        "action": "POST /transactionmanagement/create-transaction",
        "resource": {"idempotency_key": "h:3f2a9c0d1e2b4a5c", "transaction_id": "h:9b8a7c6d5e4f3a2b"},
        "outcome": "success", "status": 200, "attempts": 1, "latency_ms": 42
    }) {
        Value::Object(map) => map,
        _ => unreachable!(),
    }
}

fn append(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = ChainWriter::open(dir.path()).unwrap();
    let records: Vec<_> = (0..1000).map(record).collect();
    let mut group = c.benchmark_group("audit");
    group.throughput(Throughput::Elements(records.len() as u64));
    group.bench_function("append 1000 + one fsync", |b| {
        b.iter(|| {
            for r in &records {
                writer.append(r).unwrap();
            }
            writer.sync().unwrap();
        });
    });
    group.finish();
}

criterion_group!(benches, append);
criterion_main!(benches);
