//! Unit tests for the pieces the conformance suite cannot see: pragmas, the batch
//! executor, the codecs, query plans.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use rusqlite::Connection;
use tokio::sync::oneshot;

use super::codec::{InsertRow, decode_headers, encode_headers, from_millis, to_millis};
use super::schema::{JOURNAL_SIZE_LIMIT, Role, SCHEMA_VERSION, open_connection};
use super::writer::{self, CLAIM_SQL, Command, Job, PURGE_CHUNK, PURGE_CHUNK_IDS, Purge};
use super::{COUNT_PENDING_SQL, LIST_BY_STATUS_SQL};
use crate::{Inserted, StoreError};

fn writer_connection() -> (tempfile::TempDir, Connection) {
    let dir = tempfile::tempdir().unwrap();
    let conn = open_connection(&dir.path().join("events.db"), Role::Writer).unwrap();
    (dir, conn)
}

fn insert_command(key: &str) -> (Command, oneshot::Receiver<Result<Inserted, StoreError>>) {
    let (reply, answer) = oneshot::channel();
    let row = InsertRow {
        dedupe_key: key.to_owned(),
        order_key: None,
        correlation_id: "c".to_owned(),
        body: Bytes::from_static(b"{}"),
        headers: Vec::new(),
        received_at: 0,
        uid: uuid::Uuid::now_v7(),
    };
    (Command::Insert(Job::new(row, reply)), answer)
}

#[test]
fn writer_connection_is_durable() {
    let (_dir, conn) = writer_connection();
    let pragma = |name: &str| -> String {
        conn.pragma_query_value(None, name, |row| row.get::<_, rusqlite::types::Value>(0))
            .map(|value| format!("{value:?}"))
            .unwrap()
    };
    assert_eq!(pragma("journal_mode"), r#"Text("wal")"#);
    assert_eq!(pragma("synchronous"), "Integer(2)", "FULL");
    assert_eq!(pragma("foreign_keys"), "Integer(1)");
    assert_eq!(pragma("busy_timeout"), "Integer(5000)");
    assert_eq!(
        pragma("journal_size_limit"),
        format!("Integer({JOURNAL_SIZE_LIMIT})"),
        "the WAL shrinks after a checkpoint"
    );
    assert_eq!(pragma("user_version"), format!("Integer({SCHEMA_VERSION})"));
}

#[test]
fn reader_connection_cannot_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    let _writer = open_connection(&path, Role::Writer).unwrap();
    let reader = open_connection(&path, Role::Reader).unwrap();
    let error = reader.execute("DELETE FROM events", []).unwrap_err();
    assert!(error.to_string().contains("readonly"), "{error}");
}

#[test]
fn duplicate_within_one_batch_is_duplicate_of_first() {
    let (_dir, mut conn) = writer_connection();
    let (first, first_answer) = insert_command("same");
    let (other, other_answer) = insert_command("other");
    let (second, second_answer) = insert_command("same");
    let mut batch = vec![first, other, second];
    writer::execute(&mut conn, &mut batch);
    assert!(batch.is_empty(), "every command answered");
    let first = first_answer.blocking_recv().unwrap().unwrap();
    let Inserted::New(id) = first else {
        panic!("first insert: {first:?}")
    };
    assert!(matches!(other_answer.blocking_recv().unwrap(), Ok(Inserted::New(o)) if o != id));
    assert_eq!(
        second_answer.blocking_recv().unwrap().unwrap(),
        Inserted::Duplicate(id)
    );
}

#[test]
fn a_failing_command_does_not_fail_its_batch() {
    let (_dir, mut conn) = writer_connection();
    conn.execute_batch(
        "CREATE TRIGGER poison BEFORE INSERT ON events WHEN NEW.dedupe_key = 'poison'
         BEGIN SELECT RAISE(ABORT, 'poisoned'); END;",
    )
    .unwrap();
    let (before, before_answer) = insert_command("before");
    let (poison, poison_answer) = insert_command("poison");
    let (after, after_answer) = insert_command("after");
    let mut batch = vec![before, poison, after];
    writer::execute(&mut conn, &mut batch);
    assert!(matches!(
        before_answer.blocking_recv().unwrap(),
        Ok(Inserted::New(_))
    ));
    let error = poison_answer.blocking_recv().unwrap().unwrap_err();
    assert!(
        matches!(&error, StoreError::Io { operation: "insert", detail, .. } if detail.contains("poisoned")),
        "{error:?}"
    );
    assert!(
        std::error::Error::source(&error)
            .and_then(|cause| cause.downcast_ref::<rusqlite::Error>())
            .is_some(),
        "SQLite's error is kept as the cause: {error:?}"
    );
    assert!(matches!(
        after_answer.blocking_recv().unwrap(),
        Ok(Inserted::New(_))
    ));
    let stored: i64 = conn
        .query_row("SELECT COUNT(*) FROM events", [], |row| row.get(0))
        .unwrap();
    assert_eq!(stored, 2);
}

/// A writer connection holding `rows` events: a tenth pending (half of them with an
/// ordering key, a few superseded), the rest delivered or dead, as under a backlog.
fn connection_with_rows(rows: i64) -> (tempfile::TempDir, Connection) {
    let (dir, conn) = writer_connection();
    conn.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
         INSERT INTO events (dedupe_key, order_key, correlation_id, body, headers,
                             received_at, status, attempts, next_attempt_at, uid,
                             pending_since, superseded)
         SELECT 'k' || i, CASE WHEN i % 2 = 0 THEN 'o' || (i % 97) END, 'c', x'7b7d', x'',
                i, CASE i % 10 WHEN 0 THEN 'pending' WHEN 1 THEN 'dead' ELSE 'delivered' END,
                0, i * 7 % 1000, 'u' || i, i, CASE WHEN i % 30 = 0 THEN 1 ELSE 0 END
         FROM n",
        [rows],
    )
    .unwrap();
    (dir, conn)
}

/// SQLite's plan for `sql`, one step a line.
fn query_plan(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> String {
    let steps: Vec<String> = conn
        .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
        .unwrap()
        .query_map(params, |row| row.get::<_, String>(3))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    steps.join("\n")
}

#[test]
fn claim_reads_due_rows_in_index_order() {
    let (_dir, conn) = connection_with_rows(20_000);
    let plan = query_plan(&conn, CLAIM_SQL, rusqlite::params![500, 10]);
    assert!(plan.contains("events_pending_due"), "{plan}");
    assert!(!plan.contains("TEMP B-TREE"), "sorts the due rows:\n{plan}");
    // The ordering check looks up earlier pending rows of the key only.
    assert!(plan.contains("events_pending_order_key"), "{plan}");
}

#[test]
fn listing_by_status_does_not_sort_the_table() {
    let (_dir, conn) = connection_with_rows(20_000);
    let plan = query_plan(&conn, LIST_BY_STATUS_SQL, rusqlite::params!["dead", 10]);
    assert!(plan.contains("events_status_id"), "{plan}");
    assert!(!plan.contains("TEMP B-TREE"), "{plan}");
    // A purge chunk: the oldest delivered rows, read along the same index.
    let plan = query_plan(&conn, PURGE_CHUNK_IDS, rusqlite::params![5_000, 1_000]);
    assert!(plan.contains("events_status_id"), "{plan}");
    assert!(!plan.contains("TEMP B-TREE"), "{plan}");
}

#[test]
fn the_pending_count_reads_pending_rows_only() {
    let (_dir, conn) = connection_with_rows(20_000);
    let plan = query_plan(&conn, COUNT_PENDING_SQL, []);
    assert!(
        plan.contains("events_pending_due") || plan.contains("events_status_id (status=?)"),
        "{plan}"
    );
    let pending: i64 = conn
        .query_row(COUNT_PENDING_SQL, [], |row| row.get(0))
        .unwrap();
    assert_eq!(pending, 2_000);
}

#[test]
fn purge_deletes_in_chunks_and_lets_other_commands_in_between() {
    let (_dir, mut conn) = connection_with_rows(25_000);
    // 20 000 delivered rows, received at 1..=25 000: those before 5 001 go (4 000 rows),
    // the tombstones of those before 3 001 are forgotten at once.
    let (reply, mut answer) = oneshot::channel();
    let mut batch = vec![Command::Purge(Job::new(Purge::new(5_001, 3_001), reply))];
    let delivered = |conn: &Connection| -> i64 {
        conn.query_row(
            "SELECT COUNT(*) FROM events WHERE status = 'delivered'",
            [],
            |row| row.get(0),
        )
        .unwrap()
    };
    writer::execute(&mut conn, &mut batch);
    assert_eq!(batch.len(), 1, "the purge stays queued for its next chunk");
    assert!(answer.try_recv().is_err(), "not answered after one chunk");
    assert_eq!(
        delivered(&conn),
        20_000 - PURGE_CHUNK,
        "one chunk committed"
    );

    // The next transaction runs the next chunk and what was queued since.
    let (insert, inserted) = insert_command("during-the-purge");
    batch.push(insert);
    writer::execute(&mut conn, &mut batch);
    assert!(matches!(
        inserted.blocking_recv().unwrap(),
        Ok(Inserted::New(_))
    ));
    let mut transactions = 2;
    while !batch.is_empty() {
        writer::execute(&mut conn, &mut batch);
        transactions += 1;
    }
    assert_eq!(answer.blocking_recv().unwrap().unwrap(), 4_000);
    assert_eq!(
        transactions, 5,
        "4 000 rows in chunks of 1 000, and an empty one"
    );
    assert_eq!(delivered(&conn), 16_000);
    let tombstones: i64 = conn
        .query_row("SELECT COUNT(*) FROM dedupe_tombstones", [], |row| {
            row.get(0)
        })
        .unwrap();
    assert_eq!(
        tombstones, 1_600,
        "the delivered rows received at 3 001..5 000"
    );
}

#[test]
fn headers_round_trip_in_order() {
    let headers = vec![
        ("A".to_owned(), "1".to_owned()),
        ("a".to_owned(), String::new()),
        (String::new(), "値 ✓".to_owned()),
    ];
    let blob = encode_headers(&headers).unwrap();
    assert_eq!(decode_headers(&blob).unwrap(), headers);
    assert_eq!(decode_headers(&encode_headers(&[]).unwrap()).unwrap(), []);
}

#[test]
fn corrupt_headers_are_refused() {
    let blob = encode_headers(&[("name".to_owned(), "value".to_owned())]).unwrap();
    assert!(
        decode_headers(&blob[..blob.len() - 1]).is_none(),
        "truncated"
    );
    assert!(decode_headers(&blob[..3]).is_none(), "short length");
    assert!(
        decode_headers(&[1, 0, 0, 0, 0xff, 0, 0, 0, 0]).is_none(),
        "not UTF-8"
    );
}

#[test]
fn times_round_trip_in_milliseconds() {
    for ms in [0, 1, 1_700_000_000_123, -1, -86_400_000] {
        assert_eq!(to_millis(from_millis(ms)), ms);
    }
    let before = UNIX_EPOCH - Duration::from_millis(1500);
    assert_eq!(to_millis(before), -1500);
    let now = SystemTime::now();
    let truncated = from_millis(to_millis(now));
    assert!(now.duration_since(truncated).unwrap() < Duration::from_millis(1));
}

#[tokio::test]
async fn a_stopped_writer_thread_makes_the_store_unhealthy() {
    let dir = tempfile::tempdir().unwrap();
    let store = super::SqliteStore::open(&dir.path().join("events.db")).unwrap();
    assert_eq!(crate::EventStore::health(&store), crate::Health::Healthy);
    // The writer stops behind the store's back (as if it had died), not through close().
    let (reply, done) = oneshot::channel();
    store
        .commands
        .as_ref()
        .unwrap()
        .send(Command::Close(reply))
        .await
        .map_err(|_| ())
        .unwrap();
    done.await.unwrap();
    for _ in 0..100 {
        if store.writer.as_ref().unwrap().is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let health = crate::EventStore::health(&store);
    assert!(
        matches!(&health, crate::Health::Unhealthy(why) if why.contains("writer thread stopped")),
        "{health:?}"
    );
}

#[tokio::test]
async fn failing_operations_make_the_store_unhealthy_until_one_succeeds() {
    use crate::{EventStore, Health, NewEvent};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    let store = super::SqliteStore::open(&path).unwrap();
    let poisoner = Connection::open(&path).unwrap();
    poisoner
        .execute_batch(
            "CREATE TRIGGER poison BEFORE INSERT ON events WHEN NEW.dedupe_key LIKE 'poison%'
             BEGIN SELECT RAISE(ABORT, 'disk says no'); END;",
        )
        .unwrap();
    let event = |key: &str| NewEvent {
        dedupe_key: key.to_owned(),
        order_key: None,
        correlation_id: "c".to_owned(),
        body: Bytes::from_static(b"{}"),
        headers: Vec::new(),
        received_at: SystemTime::now(),
    };
    for n in 1..=3 {
        assert!(store.insert(event(&format!("poison-{n}"))).await.is_err());
        let healthy = store.health().is_healthy();
        assert_eq!(healthy, n < 3, "after {n} failures");
    }
    let Health::Unhealthy(why) = store.health() else {
        unreachable!("checked above")
    };
    assert!(why.contains("disk says no"), "{why}");
    store.insert(event("fine")).await.unwrap();
    assert_eq!(store.health(), Health::Healthy, "a success heals");
    store.close().await;
    assert!(!store.health().is_healthy(), "closed");
}
