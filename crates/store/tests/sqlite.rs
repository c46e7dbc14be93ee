//! The SQLite backend: the conformance suite on temporary files, then what only a file
//! can do: survive a reopen, a dropped store and a killed process.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use fincode_store::{EventId, EventStore, Inserted, SqliteStore, Status, StoreError, conformance};

use self::support::event;

fn open(path: &Path) -> Arc<dyn EventStore> {
    Arc::new(SqliteStore::open(path).unwrap())
}

/// The path and the detail of a [`StoreError::Open`]; a panic for any other error.
fn open_failure(error: &StoreError) -> (&str, &str) {
    match error {
        StoreError::Open { path, detail, .. } => (path, detail),
        other => panic!("{other:?}"),
    }
}

// === conformance ===

/// Runs `check` on a store in a file of its own.
async fn on_a_fresh_file(check: conformance::Check) {
    let dir = tempfile::tempdir().unwrap();
    check(open(&dir.path().join("events.db"))).await;
}

support::conformance_tests!(on_a_fresh_file);

/// `run_all` itself, the entry point the Postgres tests use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_run_all() {
    let dir = tempfile::tempdir().unwrap();
    let mut n = 0;
    conformance::run_all(|| {
        n += 1;
        let store = open(&dir.path().join(format!("events-{n}.db")));
        async move { store }
    })
    .await;
}

// === opening ===

#[test]
fn open_in_a_missing_directory_names_the_path_and_a_fix() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("not-mounted").join("events.db");
    let error = SqliteStore::open(&path).unwrap_err();
    let (named, detail) = open_failure(&error);
    assert_eq!(named, path.display().to_string());
    assert!(detail.contains("does not exist"), "{detail}");
    assert!(detail.contains("store.sqlite_path"), "{detail}");
    assert!(error.to_string().contains(&*path.display().to_string()));
}

#[cfg(target_os = "linux")]
#[test]
fn open_in_an_unwritable_directory_names_the_path_and_a_fix() {
    // /proc refuses new files even to root, unlike a chmod-ed directory.
    let path = Path::new("/proc/fincode-sidecar-events.db");
    let error = SqliteStore::open(path).unwrap_err();
    let (named, detail) = open_failure(&error);
    assert_eq!(named, "/proc/fincode-sidecar-events.db");
    assert!(detail.contains("writable"), "{detail}");
    assert!(detail.contains("store.sqlite_path"), "{detail}");
}

#[test]
fn open_of_a_file_that_is_not_a_database_fails() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    std::fs::write(&path, vec![b'x'; 4096]).unwrap();
    let error = SqliteStore::open(&path).unwrap_err();
    assert!(matches!(error, StoreError::Open { .. }), "{error:?}");
}

#[tokio::test]
async fn a_second_open_of_the_same_file_fails_until_the_first_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    let first = SqliteStore::open(&path).unwrap();
    let id = match first.insert(event("leased")).await.unwrap() {
        Inserted::New(id) => id,
        other @ Inserted::Duplicate(_) => panic!("{other:?}"),
    };
    let claimed = first
        .claim_due(SystemTime::now(), 1, Duration::from_mins(1), "first")
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);

    // A rolling update's new pod on the same volume.
    let error = SqliteStore::open(&path).unwrap_err();
    let (named, detail) = open_failure(&error);
    assert_eq!(named, path.display().to_string());
    assert!(detail.contains("events.db.lock"), "{detail}");
    assert!(detail.contains("another process"), "{detail}");
    assert!(detail.contains("Recreate"), "{detail}");
    // ...and it did not void the first one's lease.
    assert!(
        first.mark_delivered(&claimed[0].lease).await.unwrap(),
        "the first store's lease still holds"
    );

    first.close().await;
    let second = SqliteStore::open(&path).unwrap();
    assert_eq!(
        second.get(id).await.unwrap().unwrap().status,
        Status::Delivered
    );
    drop(second);
    drop(SqliteStore::open(&path).unwrap());
}

#[test]
fn open_refuses_a_newer_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    drop(SqliteStore::open(&path).unwrap());
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let error = SqliteStore::open(&path).unwrap_err();
    let StoreError::Open { detail, .. } = &error else {
        panic!("{error:?}")
    };
    assert!(detail.contains("schema version 99 is newer"), "{detail}");
}

/// A file written by the first release (schema version 1, no uid column) is migrated:
/// every row gets a distinct UUIDv7 whose timestamp is its received_at, and it survives
/// a reopen unchanged.
#[tokio::test]
async fn a_version_1_file_gets_a_uid_for_every_row() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        "CREATE TABLE events (
            id INTEGER PRIMARY KEY AUTOINCREMENT, dedupe_key TEXT NOT NULL UNIQUE,
            order_key TEXT, correlation_id TEXT NOT NULL, body BLOB NOT NULL,
            headers BLOB NOT NULL, received_at INTEGER NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'dead')),
            attempts INTEGER NOT NULL CHECK (attempts >= 0), next_attempt_at INTEGER NOT NULL,
            last_error TEXT, lease_owner TEXT, lease_until INTEGER) STRICT;
         CREATE INDEX events_status_due ON events (status, next_attempt_at);
         CREATE INDEX events_order_key ON events (order_key, id) WHERE order_key IS NOT NULL;
         INSERT INTO events (dedupe_key, correlation_id, body, headers, received_at, status,
                             attempts, next_attempt_at)
         VALUES ('old-1', 'c1', x'7b7d', x'', 1700000000123, 'pending', 0, 1700000000123),
                ('old-2', 'c2', x'7b7d', x'', 1700000000123, 'dead', 3, 1700000000123);
         PRAGMA user_version = 1;",
    )
    .unwrap();
    drop(conn);

    let store = open(&path);
    let events = store.list(None, 10).await.unwrap();
    assert_eq!(events.len(), 2);
    assert_ne!(events[0].uid, events[1].uid);
    for event in &events {
        assert_eq!(event.uid.get_version_num(), 7, "{}", event.uid);
        let (seconds, nanos) = event.uid.get_timestamp().unwrap().to_unix();
        assert_eq!(
            u128::from(seconds) * 1000 + u128::from(nanos / 1_000_000),
            1_700_000_000_123,
            "the uid's time is the event's receipt"
        );
        assert_eq!(
            event.pending_since, event.received_at,
            "pending since receipt"
        );
    }
    drop(store);
    assert_eq!(open(&path).list(None, 10).await.unwrap(), events);
}

// === durability ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    let now = SystemTime::now();
    let mut binary = event("binary");
    binary.body = Bytes::from_static(b"\x00\xff{\"a\":1}\r\n");
    binary.order_key = Some("PCN1".to_owned());
    binary.headers.push(("x-empty".to_owned(), String::new()));

    let store = open(&path);
    let Inserted::New(kept) = store.insert(binary.clone()).await.unwrap() else {
        panic!("new")
    };
    let Inserted::New(failed) = store.insert(event("failed")).await.unwrap() else {
        panic!("new")
    };
    let Inserted::New(dead) = store.insert(event("dead")).await.unwrap() else {
        panic!("new")
    };
    let Inserted::New(delivered) = store.insert(event("delivered")).await.unwrap() else {
        panic!("new")
    };
    let due = now + Duration::from_secs(1);
    let claimed = store
        .claim_due(due, 10, Duration::from_mins(1), "w")
        .await
        .unwrap();
    let lease = |id: EventId| &claimed.iter().find(|c| c.event.id == id).unwrap().lease;
    assert!(
        store
            .mark_failed(lease(failed), now + Duration::from_mins(10), "http 503")
            .await
            .unwrap()
    );
    assert!(store.mark_dead(lease(dead), "max attempts").await.unwrap());
    assert!(store.mark_delivered(lease(delivered)).await.unwrap());
    let before: Vec<_> = store.list(None, 10).await.unwrap();
    let counts = store.counts().await.unwrap();
    drop(store);

    let store = open(&path);
    assert_eq!(store.list(None, 10).await.unwrap(), before);
    assert_eq!(store.counts().await.unwrap(), counts);
    let kept = store.get(kept).await.unwrap().unwrap();
    assert_eq!(kept.body, binary.body);
    assert_eq!(kept.headers, binary.headers);
    assert_eq!(kept.order_key.as_deref(), Some("PCN1"));
    let failed = store.get(failed).await.unwrap().unwrap();
    assert_eq!(
        (failed.status, failed.attempts, failed.last_error.as_deref()),
        (Status::Pending, 1, Some("http 503"))
    );
    assert_eq!(store.get(dead).await.unwrap().unwrap().status, Status::Dead);
    assert_eq!(
        store.get(delivered).await.unwrap().unwrap().status,
        Status::Delivered
    );
    // Dedupe keys survive too, and ids keep increasing.
    assert_eq!(
        store.insert(event("dead")).await.unwrap(),
        Inserted::Duplicate(dead)
    );
    let Inserted::New(next) = store.insert(event("next")).await.unwrap() else {
        panic!("new")
    };
    assert!(next > delivered);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_finishes_queued_work_then_reports_closed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    let store = Arc::new(SqliteStore::open(&path).unwrap());
    let inserts: Vec<_> = (0..100)
        .map(|n| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.insert(event(&format!("queued-{n}"))).await })
        })
        .collect();
    store.close().await;
    store.close().await;
    assert!(matches!(
        store.insert(event("late")).await,
        Err(StoreError::Closed)
    ));
    assert!(matches!(store.counts().await, Err(StoreError::Closed)));
    assert!(matches!(store.get(1).await, Err(StoreError::Closed)));
    let mut committed = 0;
    for insert in inserts {
        match insert.await.unwrap() {
            Ok(Inserted::New(_)) => committed += 1,
            Err(StoreError::Closed) => {}
            other => panic!("{other:?}"),
        }
    }
    drop(store);
    let reopened = open(&path);
    assert_eq!(reopened.counts().await.unwrap().pending, committed);
}

/// Many inserts in flight, the tasks aborted and the store dropped mid-stream: every
/// insert that returned `Ok` is in the file when it is opened again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_inserts_survive_dropping_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    let store = open(&path);
    let (acks, mut acked) = tokio::sync::mpsc::unbounded_channel();
    let tasks: Vec<_> = (0..2000)
        .map(|n| {
            let store = Arc::clone(&store);
            let acks = acks.clone();
            tokio::spawn(async move {
                let key = format!("inflight-{n}");
                if let Ok(Inserted::New(id)) = store.insert(event(&key)).await {
                    let _ = acks.send((key, id));
                }
            })
        })
        .collect();
    drop(acks);
    let mut confirmed: Vec<(String, EventId)> = Vec::new();
    while confirmed.len() < 200 {
        confirmed.push(acked.recv().await.unwrap());
    }
    for task in &tasks {
        task.abort();
    }
    for task in tasks {
        let _ = task.await;
    }
    assert_eq!(Arc::strong_count(&store), 1, "every task has let go");
    drop(store);
    while let Ok(ack) = acked.try_recv() {
        confirmed.push(ack);
    }

    let store = open(&path);
    for (key, id) in &confirmed {
        let stored = store.get(*id).await.unwrap();
        assert_eq!(stored.map(|e| e.dedupe_key).as_deref(), Some(key.as_str()));
    }
    let pending = store.counts().await.unwrap().pending;
    assert!(pending >= confirmed.len() as u64);
}

const CRASH_DB: &str = "FINCODE_STORE_TEST_CRASH_DB";

/// A child process inserts as fast as it can and prints each acknowledged insert; it
/// is killed with SIGKILL mid-stream. Every insert it acknowledged is in the file.
#[test]
fn acknowledged_inserts_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "child_inserts_until_killed",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_DB, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut output = BufReader::new(child.stdout.take().unwrap());
    let mut acked: Vec<(String, EventId)> = Vec::new();
    let mut parse = |line: &str| {
        if let Some(ack) = line.trim_end().strip_prefix("ack ") {
            let (key, id) = ack.split_once(' ').unwrap();
            acked.push((key.to_owned(), id.parse().unwrap()));
        }
    };
    let mut line = String::new();
    let mut seen = 0;
    while seen < 2000 {
        line.clear();
        if output.read_line(&mut line).unwrap() == 0 {
            break;
        }
        seen += usize::from(line.starts_with("ack "));
        parse(&line);
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // What it printed before it died was acknowledged too.
    for line in output.lines() {
        parse(&line.unwrap());
    }
    assert!(
        acked.len() >= 2000,
        "the child stopped early: {}",
        acked.len()
    );

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = open(&path);
        for (key, id) in &acked {
            let stored = store.get(*id).await.unwrap();
            assert_eq!(stored.map(|e| e.dedupe_key).as_deref(), Some(key.as_str()));
        }
        assert!(store.counts().await.unwrap().pending >= acked.len() as u64);
    });
}

/// The child half of [`acknowledged_inserts_survive_sigkill`].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the child process of acknowledged_inserts_survive_sigkill"]
async fn child_inserts_until_killed() {
    let Some(path) = std::env::var_os(CRASH_DB) else {
        return;
    };
    let store = open(&PathBuf::from(path));
    let workers: Vec<_> = (0..32)
        .map(|worker| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                // Bounded, in case the parent never kills it.
                for n in 0..5_000 {
                    let key = format!("w{worker}-{n}");
                    match store.insert(event(&key)).await {
                        Ok(Inserted::New(id)) => println!("ack {key} {id}"),
                        other => panic!("{key}: {other:?}"),
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
}

/// A sidecar killed mid-delivery leaves leases behind; the next run of the same (single)
/// sidecar must not wait them out before delivering those events again.
#[tokio::test]
async fn reopening_voids_the_leases_of_the_previous_run() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    let due = SystemTime::now() + Duration::from_secs(1);
    let hour = Duration::from_hours(1);
    let store = open(&path);
    store.insert(event("leased")).await.unwrap();
    let claimed = store.claim_due(due, 10, hour, "old").await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert!(
        store
            .claim_due(due, 10, hour, "other")
            .await
            .unwrap()
            .is_empty(),
        "leased for an hour"
    );
    drop(store);

    let store = open(&path);
    let again = store.claim_due(due, 10, hour, "new").await.unwrap();
    assert_eq!(again.len(), 1, "due again at once after the restart");
}
