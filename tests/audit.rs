//! `fincode-sidecar audit verify` and `audit public-key`, run as the binary on trails
//! written by the audit crate: intact trails pass, a tampered one is named, exit codes hold.
#![allow(clippy::unwrap_used)]

mod support;

use std::process::Command;

use fincode_audit::{ChainWriter, Signer, segment_path};
use serde_json::{Map, Value, json};
use support::{BIN, run_binary};

/// Base64 of a fixed 32-byte seed; a real one comes from the environment.
const SEED: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

fn record(n: u64) -> Map<String, Value> {
    match json!({"kind": "request", "action": "GET /transactionmanagement/transactions", "n": n}) {
        Value::Object(map) => map,
        _ => unreachable!(),
    }
}

fn trail(dir: &std::path::Path) {
    let signer = Signer::from_base64_seed(SEED).unwrap();
    let mut writer = ChainWriter::open(dir).unwrap();
    for n in 0..5 {
        writer.append(&record(n)).unwrap();
    }
    writer.checkpoint(&signer, 1_795_000_000_000).unwrap();
    writer.rotate().unwrap();
    for n in 5..8 {
        writer.append(&record(n)).unwrap();
    }
    writer.sync().unwrap();
}

fn verify(dir: &std::path::Path, key: Option<&str>) -> (Option<i32>, String) {
    let mut command = Command::new(BIN);
    command.args(["audit", "verify"]).arg(dir);
    if let Some(key) = key {
        command.args(["--public-key", key]);
    }
    run_binary(&mut command)
}

#[test]
fn an_intact_trail_verifies_and_a_tampered_one_is_named_with_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    trail(dir.path());
    let public = Signer::from_base64_seed(SEED).unwrap().public_key_base64();

    let (code, text) = verify(dir.path(), Some(&public));
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("intact (2 segment(s), 11 record(s)"),
        "{text}"
    );

    // The key can also be given as a file, as `audit public-key` writes it.
    let key_file = dir.path().join("audit.pub");
    std::fs::write(&key_file, format!("{public}\n")).unwrap();
    let (code, text) = verify(dir.path(), Some(key_file.to_str().unwrap()));
    assert_eq!(code, Some(0), "{text}");

    // One byte edited in the first segment.
    let path = segment_path(dir.path(), 1);
    let edited = std::fs::read_to_string(&path)
        .unwrap()
        .replacen("\"n\":2", "\"n\":3", 1);
    std::fs::write(&path, edited).unwrap();
    let (code, text) = verify(dir.path(), Some(&public));
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("segment 1 line 4: seq 4 was edited"),
        "{text}"
    );
    assert!(text.contains("NOT intact"), "{text}");

    // A key that did not sign the checkpoints.
    let dir = tempfile::tempdir().unwrap();
    trail(dir.path());
    let stranger = Signer::from_base64_seed("HxwdHhobGBkWFxQVEhMQEQ4PDA0KCwgJBgcEBQIDAAE=")
        .unwrap()
        .public_key_base64();
    let (code, text) = verify(dir.path(), Some(&stranger));
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("bad signature"), "{text}");
}

#[test]
fn public_key_prints_what_verifies_and_never_the_seed() {
    let (code, text) = run_binary(
        Command::new(BIN)
            .args(["audit", "public-key", "--key-env", "TEST_AUDIT_SEED"])
            .env("TEST_AUDIT_SEED", SEED),
    );
    assert_eq!(code, Some(0), "{text}");
    let public = Signer::from_base64_seed(SEED).unwrap().public_key_base64();
    assert_eq!(text.trim(), public);
    assert!(!text.contains(SEED));

    let (code, text) = run_binary(
        Command::new(BIN)
            .args(["audit", "public-key", "--key-env", "TEST_AUDIT_SEED"])
            .env("TEST_AUDIT_SEED", "not-a-seed"),
    );
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("32-byte Ed25519 seed") && !text.contains("not-a-seed"),
        "{text}"
    );

    let (code, text) = run_binary(Command::new(BIN).args(["audit", "verify", "/nonexistent/dir"]));
    assert_eq!(code, Some(2), "{text}");
}

// === The tamper matrix ===

/// The sidecar's log line for a checkpoint (tracing-subscriber JSON, flattened).
fn log_line(checkpoint: &fincode_audit::Checkpoint, signature: &str) -> String {
    json!({
        "timestamp": "2026-11-29T20:00:00.000000Z",
        "level": "INFO",
        "message": "audit checkpoint",
        "target": "fincode_audit::checkpoint",
        "segment": checkpoint.segment,
        "seq": checkpoint.seq,
        "head": checkpoint.head,
        "time_ms": checkpoint.time_ms,
        "signature": signature,
    })
    .to_string()
}

/// A signed trail of three segments, and the sidecar's log holding every checkpoint.
///
/// Segment 1: header (seq 1), records n=0..3 (seq 2-5), checkpoint (seq 6).
/// Segment 2: header (seq 7), records n=10..13 (seq 8-11), checkpoint (seq 12).
/// Segment 3: header (seq 13), records n=20..23 (seq 14-17), checkpoint (seq 18),
/// records n=24, 25 (seq 19-20), checkpoint (seq 21, covering seq 20).
struct Matrix {
    trail: tempfile::TempDir,
    log: std::path::PathBuf,
    public: String,
}

impl Matrix {
    fn new() -> Self {
        let trail = tempfile::tempdir().unwrap();
        let signer = Signer::from_base64_seed(SEED).unwrap();
        let mut writer = ChainWriter::open(trail.path()).unwrap();
        let mut log = vec![
            r#"{"timestamp":"2026-11-29T19:59:59Z","level":"INFO","message":"listening"}"#
                .to_owned(),
        ];
        for segment in 0..3 {
            for n in 0..4 {
                writer.append(&record(segment * 10 + n)).unwrap();
            }
            let (checkpoint, signature) = writer.checkpoint(&signer, 1_795_000_000_000).unwrap();
            // Container runtimes prefix each line; the reader skips that.
            log.push(format!(
                "2026-11-29T20:00:00Z stdout F {}",
                log_line(&checkpoint, &signature)
            ));
            if segment < 2 {
                writer.rotate().unwrap();
            }
        }
        for n in 24..26 {
            writer.append(&record(n)).unwrap();
        }
        let (checkpoint, signature) = writer.checkpoint(&signer, 1_795_000_060_000).unwrap();
        log.push(log_line(&checkpoint, &signature));
        log.push("a line that is not JSON".to_owned());
        writer.sync().unwrap();
        let log_path = trail.path().join("sidecar.log");
        std::fs::write(&log_path, log.join("\n") + "\n").unwrap();
        Self {
            trail,
            log: log_path,
            public: signer.public_key_base64(),
        }
    }

    fn lines(&self, segment: u64) -> Vec<String> {
        std::fs::read_to_string(segment_path(self.trail.path(), segment))
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn write(&self, segment: u64, lines: &[String]) {
        std::fs::write(
            segment_path(self.trail.path(), segment),
            lines.join("\n") + "\n",
        )
        .unwrap();
    }

    /// `audit verify` with the key and the log: (exit code, stdout).
    fn verify(&self) -> (Option<i32>, String) {
        let output = Command::new(BIN)
            .args(["audit", "verify"])
            .arg(self.trail.path())
            .args(["--public-key", &self.public, "--checkpoints"])
            .arg(&self.log)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr);
        (output.status.code(), format!("{stdout}{stderr}"))
    }

    /// Asserts that verification fails with exit 1 and names every one of `expected`.
    fn assert_named(&self, damage: &str, expected: &[&str]) {
        let (code, text) = self.verify();
        assert_eq!(code, Some(1), "{damage}: {text}");
        for want in expected {
            assert!(text.contains(want), "{damage}: wanted {want:?} in\n{text}");
        }
        assert!(text.contains("NOT intact"), "{damage}: {text}");
    }
}

#[test]
fn an_untouched_trail_and_its_logged_checkpoints_verify() {
    let matrix = Matrix::new();
    let (code, text) = matrix.verify();
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("read 4 checkpoint(s) from 1 log file(s)"),
        "{text}"
    );
    assert!(
        text.contains("intact (3 segment(s), 21 record(s); checkpoints signed by the given key)"),
        "{text}"
    );

    // Logged checkpoints are only evidence with the key that signed them.
    let (code, text) = run_binary(
        Command::new(BIN)
            .args(["audit", "verify"])
            .arg(matrix.trail.path())
            .arg("--checkpoints")
            .arg(&matrix.log),
    );
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("--checkpoints needs --public-key"), "{text}");
}

#[test]
fn tamper_edit_a_byte() {
    let matrix = Matrix::new();
    let mut seg = matrix.lines(2);
    seg[2] = seg[2].replacen("\"n\":11", "\"n\":71", 1);
    matrix.write(2, &seg);
    matrix.assert_named("edited byte", &["segment 2 line 3: seq 9 was edited"]);
}

#[test]
fn tamper_delete_a_line() {
    let matrix = Matrix::new();
    let mut seg = matrix.lines(2);
    seg.remove(2);
    matrix.write(2, &seg);
    matrix.assert_named(
        "deleted line",
        &["segment 2 line 3: seq 9..9 removed (1 record(s) before seq 10)"],
    );
}

#[test]
fn tamper_swap_two_lines() {
    let matrix = Matrix::new();
    let mut seg = matrix.lines(2);
    seg.swap(2, 3);
    matrix.write(2, &seg);
    matrix.assert_named(
        "swapped lines",
        &["segment 2 line 4: seq 9 is out of order (after seq 10): lines were reordered"],
    );
}

#[test]
fn tamper_insert_a_forged_line() {
    let matrix = Matrix::new();
    let mut seg = matrix.lines(2);
    let forged = seg[2].replacen("\"n\":11", "\"n\":99", 1);
    seg.insert(3, forged);
    matrix.write(2, &seg);
    matrix.assert_named(
        "inserted line",
        &["segment 2 line 4: seq 9 appears twice: a line was inserted or copied"],
    );
}

#[test]
fn tamper_drop_a_whole_segment() {
    let matrix = Matrix::new();
    std::fs::remove_file(segment_path(matrix.trail.path(), 2)).unwrap();
    matrix.assert_named(
        "dropped segment",
        &[
            "segment 3: segment 2 is missing",
            "segment 3 line 1: seq 7..12 removed (6 record(s) before seq 13)",
            "segment 2: logged checkpoint for seq 11: that record is missing",
        ],
    );
}

#[test]
fn tamper_truncate_the_tail() {
    let matrix = Matrix::new();
    let mut seg = matrix.lines(3);
    // Cut right after the checkpoint at seq 18: the files alone look complete.
    seg.truncate(6);
    matrix.write(3, &seg);
    let (code, text) = run_binary(
        Command::new(BIN)
            .args(["audit", "verify"])
            .arg(matrix.trail.path())
            .args(["--public-key", &matrix.public]),
    );
    assert_eq!(
        code,
        Some(0),
        "without the log the cut is invisible: {text}"
    );
    matrix.assert_named(
        "truncated tail",
        &[
            "segment 3: logged checkpoint for seq 20: the trail ends at seq 18; records after it were truncated",
        ],
    );
}

#[test]
fn tamper_replace_a_checkpoint_signature() {
    let matrix = Matrix::new();
    let first: Value = serde_json::from_str(&matrix.lines(1)[5]).unwrap();
    let mut seg = matrix.lines(2);
    let line: Value = serde_json::from_str(&seg[5]).unwrap();
    seg[5] = seg[5].replace(
        line["sig"].as_str().unwrap(),
        first["sig"].as_str().unwrap(),
    );
    matrix.write(2, &seg);
    matrix.assert_named(
        "replaced signature",
        &["segment 2 line 6: checkpoint for seq 11: bad signature"],
    );
}

#[test]
fn tamper_replay_an_old_segment() {
    let matrix = Matrix::new();
    std::fs::copy(
        segment_path(matrix.trail.path(), 2),
        segment_path(matrix.trail.path(), 3),
    )
    .unwrap();
    matrix.assert_named(
        "replayed segment",
        &[
            "segment 3 line 1: seq 7: the segment starts at seq 7, which segment 2 already holds and its header names segment 2",
            "(replayed segment)",
            "segment 3: logged checkpoint for seq 20: the trail ends at seq 12; records after it were truncated",
        ],
    );
}

// === audit find ===

const HASH_KEY: &str = "a-test-pseudonym-key-of-32-bytes!";

fn pseudonym(value: &str) -> String {
    fincode_redact::Redactor::builder()
        .hash_key(HASH_KEY.as_bytes().to_vec().into())
        .build()
        .pseudonym(value)
}

fn find(dir: &std::path::Path, args: &[&str]) -> (Option<i32>, String, String) {
    let output = Command::new(BIN)
        .args(["audit", "find"])
        .arg(dir)
        .args(args)
        .env("TEST_HASH_KEY", HASH_KEY)
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn find_prints_exactly_the_records_about_a_clear_id() {
    let dir = tempfile::tempdir().unwrap();
    let events = [
        json!({"kind": "http", "time": "2026-11-18T11:06:40.000Z", "time_ms": 1_795_000_000_000_u64,
               "correlation_id": "corr-1", "actor": {"id": "checkout-app", "peer": "127.0.0.1:5555"},
               "action": "POST /transactionmanagement/create-transaction",
               "resources": {"reference": pseudonym("ORDER-1"), "transaction_id": pseudonym("TX-1")},
               "outcome": "success", "status": 200, "attempts": 1, "latency_ms": 12.5}),
        json!({"kind": "http", "time_ms": 1_795_000_100_000_u64, "correlation_id": "corr-2",
               "action": "POST /transactionmanagement/create-transaction",
               "resources": {"reference": pseudonym("ORDER-2")}, "status": 200}),
        json!({"kind": "webhook", "time_ms": 1_795_000_200_000_u64, "action": "webhook.received",
               "resources": {"reference": pseudonym("ORDER-1"), "transaction_id": pseudonym("TX-1")}}),
        json!({"kind": "http", "time_ms": 1_795_000_300_000_u64, "correlation_id": "corr-3",
               "action": "GET /transactionmanagement/transactions/{id}",
               "resources": {"path_id": pseudonym("TX-1")}, "status": 200}),
    ];
    let mut writer = ChainWriter::open(dir.path()).unwrap();
    for (n, event) in events.iter().enumerate() {
        let Value::Object(event) = event.clone() else {
            unreachable!()
        };
        writer.append(&event).unwrap();
        if n == 1 {
            writer.rotate().unwrap();
        }
    }
    writer.sync().unwrap();
    let raw: Vec<String> = [1, 2]
        .into_iter()
        .flat_map(|segment| {
            std::fs::read_to_string(segment_path(dir.path(), segment))
                .unwrap()
                .lines()
                .filter(|line| !line.contains("\"kind\":\"segment\""))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(raw.len(), 4);
    let text = |picks: &[usize]| {
        picks
            .iter()
            .flat_map(|i| [raw[*i].as_str(), "\n"])
            .collect::<String>()
    };
    let key = ["--key-env", "TEST_HASH_KEY"];

    let (code, stdout, stderr) = find(
        dir.path(),
        &[&key[..], &["--reference", "ORDER-1"]].concat(),
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout, text(&[0, 2]));
    assert!(stderr.contains("2 matching record(s)"), "{stderr}");

    // A transaction id is also found in the request path.
    let (code, stdout, _) = find(
        dir.path(),
        &[&key[..], &["--transaction-id", "TX-1"]].concat(),
    );
    assert_eq!(code, Some(0));
    assert_eq!(stdout, text(&[0, 2, 3]));

    // All filters must match; times are RFC 3339 (UTC).
    let (_, stdout, _) = find(
        dir.path(),
        &[
            &key[..],
            &[
                "--transaction-id",
                "TX-1",
                "--since",
                "2026-11-18T11:09:10Z",
            ],
        ]
        .concat(),
    );
    assert_eq!(stdout, text(&[2, 3]));
    let (_, stdout, _) = find(dir.path(), &["--correlation-id", "corr-2"]);
    assert_eq!(stdout, text(&[1]));

    // No match is not an error.
    let (code, stdout, stderr) = find(
        dir.path(),
        &[&key[..], &["--reference", "ORDER-9"]].concat(),
    );
    assert_eq!((code, stdout.as_str()), (Some(0), ""));
    assert!(stderr.contains("0 matching record(s)"), "{stderr}");

    // Ids without the key: a clear error, never a silent empty answer.
    let (code, _, stderr) = find(
        dir.path(),
        &["--reference", "ORDER-1", "--key-env", "UNSET_TEST_KEY_VAR"],
    );
    assert_eq!(code, Some(2));
    assert!(stderr.contains("UNSET_TEST_KEY_VAR is not set"), "{stderr}");
    // And no filter at all is a usage error.
    let (code, _, stderr) = find(dir.path(), &[]);
    assert_eq!(code, Some(2), "{stderr}");
}
