//! `fincode-sidecar store status` as the end-to-end tests of both stores run it
//! (`tests/store.rs` on SQLite, `tests/postgres.rs` on Postgres), and the report both
//! expect of the queue they set up: one event delivered, three pending.

use std::ops::Range;
use std::path::Path;
use std::process::{Command, Output};

use crate::support::BIN;

/// `fincode-sidecar store status --config <config> [args]` with `env` added.
pub(crate) fn store_status(config: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(BIN);
    command
        .args(["store", "status", "--config"])
        .arg(config)
        .args(args)
        .env_remove("FINCODE_SIDECAR_CONFIG");
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().unwrap()
}

/// What the command printed, stdout then stderr.
pub(crate) fn text(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr)
}

/// Asserts that `store status` on `config` reports, as text and as JSON, a `store`
/// (`sqlite` or `postgres`) store holding 3 pending events, 0 dead and 1 delivered, the
/// oldest pending for a number of seconds within `age`; the text also shows `named` (the
/// file or the schema). Returns that age.
pub(crate) fn assert_three_pending_one_delivered(
    config: &Path,
    store: &str,
    named: &str,
    age: Range<f64>,
) -> f64 {
    let output = store_status(config, &[], &[]);
    let shown = text(&output);
    assert_eq!(output.status.code(), Some(0), "{shown}");
    let kind = format!("store:     {store} ");
    for line in [
        &kind,
        named,
        "pending:   3 (oldest pending for ",
        "dead:      0 ",
        "delivered: 1 ",
    ] {
        assert!(shown.contains(line), "{shown}");
    }

    let output = store_status(config, &["--json"], &[]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(&output)));
    assert_eq!(json["store"], store, "{json}");
    assert_eq!(json["pending"], 3, "{json}");
    assert_eq!(json["dead"], 0, "{json}");
    assert_eq!(json["delivered"], 1, "{json}");
    let oldest = json["oldest_pending_age_seconds"].as_f64().unwrap();
    assert!(age.contains(&oldest), "{json}");
    assert!(json["oldest_pending_since"].as_str().is_some(), "{json}");
    oldest
}
