//! Redaction throughput on a realistic FinCode body and an access-log-sized line.
//! Target (DESIGN.md 7): at least 200 MB/s of JSON per core.
//!
//! `cargo bench -p fincode-redact --bench redact`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fincode_redact::Redactor;

/// A transaction list page as FinCode returns it: amounts, references, statuses, names,
/// emails, accounts, one card number in a note.
fn payload() -> String {
    let items: Vec<serde_json::Value> = (0..8)
        .map(|i| {
            serde_json::json!({
                "id": format!("9f1c2c1e-5d0b-4a38-9a43-2b8c1d1c0a{i:02}"),
                "reference": format!("PCN-2026-11-25-{i:06}"),
                "status": "PAID",
                "msgCode": "00",
                "amountSent": 25000 + i,
                "currency": "NGN",
                "fee": 52.5,
                "createdAt": "2026-11-25T10:30:00Z",
                "beneficiaryFullName": "Adaeze Okonkwo-Bello",
                "beneficiaryAccountNumber": "0123456789",
                "beneficiaryBank": "First Bank of Nigeria",
                "email": "adaeze.okonkwo@example.ng",
                "narration": format!("Invoice {i} paid with card 4539 5787 6362 1486 via web checkout"),
                "metadata": { "channel": "web", "device": "android", "retries": 0, "tags": ["a", "b"] },
            })
        })
        .collect();
    serde_json::json!({ "status": "SUCCESS", "data": { "items": items, "page": 1, "total": 8 } })
        .to_string()
}

fn bench(c: &mut Criterion) {
    let redactor = Redactor::default();
    let body = payload();
    let mut group = c.benchmark_group("redact");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function(format!("json/{}B", body.len()), |b| {
        b.iter(|| redactor.json(black_box(body.as_bytes())));
    });
    // For scale: what parsing and printing the same document costs without redaction.
    group.bench_function(format!("serde_json-roundtrip/{}B", body.len()), |b| {
        b.iter(|| {
            serde_json::from_slice::<serde_json::Value>(black_box(body.as_bytes()))
                .map(|v| v.to_string())
        });
    });
    let line = "GET /transactionmanagement/transactions?page=2 200 12ms attempts=1 route=/transactionmanagement/transactions request_id=0193a8f2-7c1e-7c4b-9a1e-3b2f5d6e7f80";
    group.throughput(Throughput::Bytes(line.len() as u64));
    group.bench_function(format!("text/{}B", line.len()), |b| {
        b.iter(|| redactor.text(black_box(line)).len());
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
