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
