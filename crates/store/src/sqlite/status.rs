//! `store status` for an SQLite store, read straight from the file.
//!
//! Operators look at the queue most when the sidecar is in trouble or down, so this
//! needs no running sidecar, and it must not disturb a running one either. It therefore
//! never opens a [`SqliteStore`](super::SqliteStore): that would take the exclusive
//! `<file>.lock` (refused while the sidecar runs) and void the sidecar's leases. One
//! read-only connection does instead: in WAL mode it reads the last commit beside the
//! sidecar's writer and never blocks it.

use std::io::Read as _;
use std::path::Path;
use std::time::SystemTime;

use rusqlite::Connection;

use super::codec::{event_from_row, from_millis, io_error, to_millis};
use super::schema::{self, Role, SCHEMA_VERSION};
use super::{COUNT_PENDING_SQL, OLDEST_PENDING_SQL};
use crate::{Counts, EventStore, Status, StoreError, StoredEvent};

/// Delivered and dead events, counted along the `events_status_id` index without
/// reading rows (pending ones are counted by [`COUNT_PENDING_SQL`], as the sidecar's
/// queue-depth gauge counts them).
const COUNT_SETTLED_SQL: &str = "SELECT status, COUNT(*) FROM events \
     WHERE status IN ('delivered', 'dead') GROUP BY status";

/// The first 16 bytes of every SQLite database file.
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// What `fincode-sidecar store status` shows: the queue, and how far behind it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreStatus {
    /// Events per status: pending is the queue depth, dead the dead letters, delivered
    /// those kept for `webhooks.retention`.
    pub counts: Counts,
    /// When the longest-waiting pending event became pending; `None` with none pending.
    pub oldest_pending: Option<SystemTime>,
}

// === impl StoreStatus ===

impl StoreStatus {
    /// Reads the status of an open store through the trait (the Postgres store, which
    /// any number of clients may open beside the sidecars).
    pub async fn of(store: &dyn EventStore) -> Result<Self, StoreError> {
        Ok(Self {
            counts: store.counts().await?,
            oldest_pending: store.oldest_pending().await?,
        })
    }
}

/// Reads the status of the SQLite store at `path` over one read-only connection, safe
/// beside a running sidecar (see the module docs).
///
/// Fails with [`StoreError::Open`], naming the path, when the file does not exist (it
/// is never created here: an empty new store would report an empty queue for a mistyped
/// path), is not an SQLite store the sidecar wrote, or has a schema of another version.
pub async fn sqlite_status(path: &Path) -> Result<StoreStatus, StoreError> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || read_status(&path))
        .await
        .map_err(|error| {
            StoreError::io("status", format!("the read task failed: {error}")).caused_by(error)
        })?
}

fn read_status(path: &Path) -> Result<StoreStatus, StoreError> {
    check_file(path)?;
    let mut conn = schema::open_connection(path, Role::Reader)?;
    read_snapshot(&mut conn, path)
}

/// Refuses, before SQLite opens it (and would create or convert it), a path that is not
/// an existing SQLite file in WAL mode, which every file the sidecar writes is.
fn check_file(path: &Path) -> Result<(), StoreError> {
    let open_error = |detail: String| StoreError::open(path.display().to_string(), detail);
    let mut file = std::fs::File::open(path).map_err(|error| {
        open_error(if error.kind() == std::io::ErrorKind::NotFound {
            "no such file; check store.sqlite_path (FINCODE_SIDECAR__STORE__SQLITE_PATH) is \
             the file the sidecar uses: it creates it when it first starts with webhooks \
             enabled"
                .to_owned()
        } else {
            format!("cannot read it: {error}")
        })
        .caused_by(error)
    })?;
    let is_file = file.metadata().is_ok_and(|meta| meta.is_file());
    let mut header = [0_u8; 20];
    if !is_file || file.read_exact(&mut header).is_err() || &header[..16] != SQLITE_MAGIC {
        return Err(open_error(
            "not an SQLite database; point store.sqlite_path at the sidecar's webhook store"
                .to_owned(),
        ));
    }
    // Bytes 18 and 19: the file format versions, 2 for WAL. A file the sidecar opened
    // is always in WAL mode; opening another would switch it to WAL, a write.
    if header[18..20] != [2, 2] {
        return Err(open_error(
            "not in WAL mode, so not a webhook store the sidecar wrote; point \
             store.sqlite_path at the sidecar's webhook store"
                .to_owned(),
        ));
    }
    Ok(())
}

/// The counts and the oldest pending event from one snapshot (one read transaction),
/// so they agree with each other.
fn read_snapshot(conn: &mut Connection, path: &Path) -> Result<StoreStatus, StoreError> {
    let read_error = |error: rusqlite::Error| io_error("status", error);
    let tx = conn.transaction().map_err(read_error)?;
    check_version(&tx, path)?;

    let pending: i64 = tx
        .query_row(COUNT_PENDING_SQL, [], |row| row.get(0))
        .map_err(read_error)?;
    let mut counts = Counts {
        pending: u64::try_from(pending).unwrap_or(0),
        ..Counts::default()
    };
    {
        let mut statement = tx.prepare(COUNT_SETTLED_SQL).map_err(read_error)?;
        let mut rows = statement.query([]).map_err(read_error)?;
        while let Some(row) = rows.next().map_err(read_error)? {
            let status: String = row.get(0).map_err(read_error)?;
            let count: i64 = row.get(1).map_err(read_error)?;
            let count = u64::try_from(count).unwrap_or(0);
            match Status::parse(&status) {
                Some(Status::Delivered) => counts.delivered = count,
                Some(Status::Dead) => counts.dead = count,
                // The WHERE clause keeps pending rows out.
                Some(Status::Pending) | None => {}
            }
        }
    }
    let oldest: Option<i64> = tx
        .query_row(OLDEST_PENDING_SQL, [], |row| row.get(0))
        .map_err(read_error)?;
    Ok(StoreStatus {
        counts,
        oldest_pending: oldest.map(from_millis),
    })
}

/// Refuses a file without the store's schema, or with another version of it: its rows
/// would be misread.
fn check_version(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(|error| io_error("status", error))?;
    if version == SCHEMA_VERSION {
        return Ok(());
    }
    let detail = if version == 0 {
        "it holds no webhook store (no schema); point store.sqlite_path at the \
         sidecar's webhook store"
            .to_owned()
    } else if version > SCHEMA_VERSION {
        format!(
            "its schema version {version} is newer than this build's ({SCHEMA_VERSION}); \
             run `store status` from the same version as the sidecar"
        )
    } else {
        format!(
            "its schema version {version} is older than this build's ({SCHEMA_VERSION}); \
             run `store status` from the same version as the sidecar, or start this \
             version's sidecar once to migrate the file"
        )
    };
    Err(StoreError::open(path.display().to_string(), detail))
}

/// Every event of the SQLite store at `path` received at or after `received_since` (all
/// of them without it), oldest first, read over one read-only connection as
/// [`sqlite_status`] does: safe beside a running sidecar, and never creating or
/// converting a file. `support-bundle` reads the events about one transaction this way.
pub async fn sqlite_events(
    path: &Path,
    received_since: Option<SystemTime>,
) -> Result<Vec<StoredEvent>, StoreError> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        check_file(&path)?;
        let mut conn = schema::open_connection(&path, Role::Reader)?;
        let read_error = |error: rusqlite::Error| io_error("events", error);
        let tx = conn.transaction().map_err(read_error)?;
        check_version(&tx, &path)?;
        let since = received_since.map_or(i64::MIN, to_millis);
        let mut statement = tx.prepare(EVENTS_SINCE_SQL).map_err(read_error)?;
        statement
            .query_map([since], event_from_row)
            .map_err(read_error)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(read_error)
    })
    .await
    .map_err(|error| {
        StoreError::io("events", format!("the read task failed: {error}")).caused_by(error)
    })?
}

/// [`sqlite_events`]: `?1` the earliest receipt time, in unix milliseconds.
const EVENTS_SINCE_SQL: &str = concat!(
    "SELECT ",
    event_columns!(),
    " FROM events WHERE received_at >= ?1 ORDER BY id"
);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;
    use std::time::{Duration, UNIX_EPOCH};

    use bytes::Bytes;

    use super::*;
    use crate::{Inserted, NewEvent, SqliteStore};

    fn event(key: &str, received_at: SystemTime) -> NewEvent {
        NewEvent {
            dedupe_key: key.to_owned(),
            order_key: None,
            correlation_id: format!("corr-{key}"),
            body: Bytes::from_static(b"{}"),
            headers: Vec::new(),
            received_at,
        }
    }

    /// Whole milliseconds since the epoch, as the store keeps times.
    fn at(ms: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(ms)
    }

    #[tokio::test]
    async fn reads_the_queue_beside_the_open_store_and_agrees_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.db");
        let store: Arc<dyn EventStore> = Arc::new(SqliteStore::open(&path).unwrap());
        // Nothing yet.
        let empty = sqlite_status(&path).await.unwrap();
        assert_eq!(empty.counts, Counts::default());
        assert_eq!(empty.oldest_pending, None);

        // Five events: one delivered, one dead, three pending (received out of order).
        let received = [
            1_700_000_000_000,
            1_700_000_000_500,
            1_700_000_003_000,
            1_700_000_001_250,
            1_700_000_002_000,
        ];
        for (i, ms) in received.into_iter().enumerate() {
            let inserted = store.insert(event(&format!("k{i}"), at(ms))).await.unwrap();
            assert!(matches!(inserted, Inserted::New(_)));
        }
        let claimed = store
            .claim_due(at(1_800_000_000_000), 2, Duration::from_secs(30), "test")
            .await
            .unwrap();
        assert_eq!(claimed.len(), 2);
        assert!(store.mark_delivered(&claimed[0].lease).await.unwrap());
        assert!(
            store
                .mark_dead(&claimed[1].lease, "status 503")
                .await
                .unwrap()
        );
        // k0 and k1 (the two oldest) left the queue: the oldest pending is k3's.
        let status = sqlite_status(&path).await.unwrap();
        assert_eq!(
            status.counts,
            Counts {
                pending: 3,
                delivered: 1,
                dead: 1
            }
        );
        assert_eq!(status.oldest_pending, Some(at(1_700_000_001_250)));
        // The same as the store itself says, through the trait.
        assert_eq!(StoreStatus::of(store.as_ref()).await.unwrap(), status);
        // The read took no lock the store needs: it still writes.
        store.insert(event("after", at(1))).await.unwrap();
        let status = sqlite_status(&path).await.unwrap();
        assert_eq!(status.counts.pending, 4);
        assert_eq!(status.oldest_pending, Some(at(1)));
    }

    #[tokio::test]
    async fn reads_a_store_no_sidecar_has_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.db");
        let store = SqliteStore::open(&path).unwrap();
        store.insert(event("k", at(42))).await.unwrap();
        store.close().await;
        drop(store);
        let status = sqlite_status(&path).await.unwrap();
        assert_eq!(status.counts.pending, 1);
        assert_eq!(status.oldest_pending, Some(at(42)));
        // ...and leaves it for the sidecar to open again.
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.count_pending().await.unwrap(), 1);
    }

    #[tokio::test]
    async fn a_missing_file_is_an_error_and_is_not_created() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("typo.db");
        let error = sqlite_status(&path).await.unwrap_err();
        let text = error.to_string();
        assert!(matches!(error, StoreError::Open { .. }), "{error:?}");
        assert!(
            text.contains("typo.db") && text.contains("no such file"),
            "{text}"
        );
        assert!(text.contains("store.sqlite_path"), "{text}");
        assert!(!path.exists(), "status must not create a store");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn what_is_not_a_sidecar_store_is_refused_and_left_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        // A text file, an empty file, and a directory.
        let text_file = dir.path().join("notes.txt");
        std::fs::write(&text_file, "not a database at all, just some words").unwrap();
        let empty = dir.path().join("empty.db");
        std::fs::write(&empty, "").unwrap();
        for path in [&text_file, &empty, &dir.path().to_owned()] {
            let error = sqlite_status(path).await.unwrap_err().to_string();
            assert!(error.contains("not an SQLite database"), "{error}");
        }
        assert_eq!(std::fs::read(&empty).unwrap(), b"");

        // An SQLite database in rollback mode: another program's.
        let other = dir.path().join("other.db");
        Connection::open(&other)
            .unwrap()
            .execute_batch("CREATE TABLE t (x INTEGER)")
            .unwrap();
        let before = std::fs::read(&other).unwrap();
        let error = sqlite_status(&other).await.unwrap_err().to_string();
        assert!(error.contains("not in WAL mode"), "{error}");
        assert_eq!(std::fs::read(&other).unwrap(), before);

        // An SQLite database in WAL mode without the store's schema.
        let bare = dir.path().join("bare.db");
        let conn = Connection::open(&bare).unwrap();
        conn.pragma_update(None, "journal_mode", "wal").unwrap();
        conn.execute_batch("CREATE TABLE t (x INTEGER)").unwrap();
        drop(conn);
        let error = sqlite_status(&bare).await.unwrap_err().to_string();
        assert!(error.contains("holds no webhook store"), "{error}");
    }

    #[tokio::test]
    async fn events_are_read_beside_the_open_store_oldest_first_from_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.db");
        let store: Arc<dyn EventStore> = Arc::new(SqliteStore::open(&path).unwrap());
        for (key, ms) in [("a", 1_000), ("b", 2_000), ("c", 3_000)] {
            store.insert(event(key, at(ms))).await.unwrap();
        }
        let claimed = store
            .claim_due(at(10_000), 1, Duration::from_secs(30), "test")
            .await
            .unwrap();
        assert!(
            store
                .mark_dead(&claimed[0].lease, "status 503")
                .await
                .unwrap()
        );

        let all = sqlite_events(&path, None).await.unwrap();
        let keys: Vec<&str> = all.iter().map(|e| e.dedupe_key.as_str()).collect();
        assert_eq!(keys, ["a", "b", "c"]);
        assert_eq!(all[0].status, Status::Dead);
        assert_eq!(all[0].attempts, 1);
        assert_eq!(all[0].last_error.as_deref(), Some("status 503"));
        assert_eq!(all[1].correlation_id, "corr-b");

        let recent = sqlite_events(&path, Some(at(2_000))).await.unwrap();
        let keys: Vec<&str> = recent.iter().map(|e| e.dedupe_key.as_str()).collect();
        assert_eq!(keys, ["b", "c"]);
        // The store still writes: the read took nothing it needs.
        store.insert(event("d", at(4_000))).await.unwrap();
        assert_eq!(sqlite_events(&path, None).await.unwrap().len(), 4);

        // A mistyped path is an error, and is not created.
        let typo = dir.path().join("typo.db");
        assert!(matches!(
            sqlite_events(&typo, None).await,
            Err(StoreError::Open { .. })
        ));
        assert!(!typo.exists());
    }

    #[tokio::test]
    async fn a_schema_of_another_version_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.db");
        drop(SqliteStore::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        drop(conn);
        let error = sqlite_status(&path).await.unwrap_err().to_string();
        assert!(error.contains("newer than this build's"), "{error}");

        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION - 1)
            .unwrap();
        drop(conn);
        let error = sqlite_status(&path).await.unwrap_err().to_string();
        assert!(error.contains("older than this build's"), "{error}");
    }
}
