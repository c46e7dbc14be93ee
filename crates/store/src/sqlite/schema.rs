//! Opening connections: pragmas, and the schema migrations keyed by `user_version`.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use crate::StoreError;

/// How long a connection waits for another one's lock (another process with the file
/// open, a checkpoint) before failing with "database is locked".
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Bytes the WAL is truncated to after a checkpoint when it grew past them.
pub(super) const JOURNAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

/// Prepared statements kept per connection: every statement the store runs, with room.
const STATEMENT_CACHE: usize = 32;

/// Migration `n` (1-based) takes the schema from `user_version` `n - 1` to `n`. Append
/// only: a released migration is never edited.
const MIGRATIONS: &[&str] = &[
    // 1: the events table. STRICT so a wrong type is an error, not a silent coercion.
    // AUTOINCREMENT so ids never repeat, even after rows are deleted.
    "CREATE TABLE events (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        dedupe_key      TEXT    NOT NULL UNIQUE,
        order_key       TEXT,
        correlation_id  TEXT    NOT NULL,
        body            BLOB    NOT NULL,
        headers         BLOB    NOT NULL,
        received_at     INTEGER NOT NULL,
        status          TEXT    NOT NULL CHECK (status IN ('pending', 'delivered', 'dead')),
        attempts        INTEGER NOT NULL CHECK (attempts >= 0),
        next_attempt_at INTEGER NOT NULL,
        last_error      TEXT,
        lease_owner     TEXT,
        lease_until     INTEGER
    ) STRICT;
    -- claim_due: pending events by due time; also counts() and list(status).
    CREATE INDEX events_status_due ON events (status, next_attempt_at);
    -- claim_due's ordering check: an earlier event with the same key.
    CREATE INDEX events_order_key ON events (order_key, id) WHERE order_key IS NOT NULL;",
    // 2: a globally unique id per event (`webhook-id: evt_<uid>`), as UUIDv7 text. The
    // rowid restarts at 1 in a new file, so apps deduplicating on it dropped new events.
    // Rows stored before get a UUIDv7 built from their received_at and random bits.
    "ALTER TABLE events ADD COLUMN uid TEXT;
    UPDATE events SET uid =
        substr(printf('%012x', received_at), 1, 8) || '-' ||
        substr(printf('%012x', received_at), 9, 4) || '-7' ||
        substr(lower(hex(randomblob(2))), 1, 3) || '-' ||
        substr('89ab', 1 + abs(random() % 4), 1) ||
        substr(lower(hex(randomblob(2))), 1, 3) || '-' ||
        lower(hex(randomblob(6)));
    CREATE UNIQUE INDEX events_uid ON events (uid);",
    // 3: when the event last became pending (receipt or replay): max_age counts from
    // here, so a replayed old dead letter is not killed again at once.
    "ALTER TABLE events ADD COLUMN pending_since INTEGER;
    UPDATE events SET pending_since = received_at;",
    // 4: fenced leases. Each claim increments the generation; a mark applies only under
    // the latest one, so a claimant whose lease expired and was re-claimed cannot clear
    // the new owner's lease or record an outcome.
    "ALTER TABLE events ADD COLUMN lease_generation INTEGER NOT NULL DEFAULT 0;",
    // 5: dedupe keys outlive purged bodies (webhooks.dedupe_retention), so a captured
    // request replayed after its event was purged is still a duplicate. Key and id only.
    "CREATE TABLE dedupe_tombstones (
        dedupe_key  TEXT    PRIMARY KEY,
        event_id    INTEGER NOT NULL,
        received_at INTEGER NOT NULL
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX dedupe_tombstones_received ON dedupe_tombstones (received_at);",
    // 6: superseded events (FinCode reports a later status) wait out their retry without
    // holding back later events of their ordering key.
    "ALTER TABLE events ADD COLUMN superseded INTEGER NOT NULL DEFAULT 0;",
    // 7: indexes shaped to the queries, so none sorts or walks rows it does not need
    // under a backlog (measured on 100 000 rows: the claim sorted every due row, 0.15 s;
    // the ordering check walked delivered rows, 0.47 s; listing by status sorted the
    // table, 0.9 s). Partial indexes on pending rows stay small however many delivered
    // rows are kept, and each index replaced here is one less to update per insert.
    "DROP INDEX events_status_due;
    DROP INDEX events_order_key;
    -- claim_due: due pending rows in claim order (ORDER BY next_attempt_at, id), read
    -- from the front and stopped at the limit; also the pending count.
    CREATE INDEX events_pending_due ON events (next_attempt_at, id)
        WHERE status = 'pending';
    -- claim_due's ordering check: an earlier pending, not superseded event of the key.
    CREATE INDEX events_pending_order_key ON events (order_key, id)
        WHERE status = 'pending' AND superseded = 0 AND order_key IS NOT NULL;
    -- list(status), newest first; replay_all_dead; purge (delivered rows by id).
    CREATE INDEX events_status_id ON events (status, id);",
];

/// The schema version this build writes.
#[allow(clippy::cast_possible_wrap)] // a handful of migrations
pub(super) const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Which connection to open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Role {
    /// The writer thread's connection: creates the file and migrates it.
    Writer,
    /// The read connection: the schema must exist; it never writes.
    Reader,
}

/// Opens and configures a connection to `path`, creating and migrating the database
/// for the [`Role::Writer`].
pub(super) fn open_connection(path: &Path, role: Role) -> Result<Connection, StoreError> {
    let shown = path.display().to_string();
    let open_error = |detail: String| StoreError::open(shown.clone(), detail);
    check_directory(path).map_err(&open_error)?;
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let hint = |error: rusqlite::Error| {
        open_error(format!(
            "{error}; check that the file and its directory are writable by the sidecar's \
             user (SQLite also creates `-wal` and `-shm` files beside it) and on a local \
             disk, or set store.sqlite_path (FINCODE_SIDECAR__STORE__SQLITE_PATH)"
        ))
        .caused_by(error)
    };
    let mut conn = Connection::open_with_flags(path, flags).map_err(hint)?;
    let set_up = configure(&conn, role).and_then(|()| match role {
        Role::Writer => migrate(&mut conn),
        Role::Reader => Ok(()),
    });
    set_up.map_err(|error| match error {
        Setup::Sqlite(error) => hint(error),
        Setup::NoWal(mode) => open_error(format!(
            "the file system does not support WAL mode (journal_mode stayed {mode}); put \
             the file on a local disk, not a network share"
        )),
        Setup::TooNew(found) => open_error(format!(
            "its schema version {found} is newer than this sidecar's ({SCHEMA_VERSION}); \
             run a newer sidecar or point store.sqlite_path at another file"
        )),
    })?;
    Ok(conn)
}

/// A missing directory is the most common mistake (an unmounted volume); say so
/// plainly instead of SQLite's "unable to open database file".
pub(super) fn check_directory(path: &Path) -> Result<(), String> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    if dir.is_dir() {
        Ok(())
    } else {
        Err(format!(
            "the directory {} does not exist; create it (in Kubernetes, mount a persistent \
             volume there) or set store.sqlite_path (FINCODE_SIDECAR__STORE__SQLITE_PATH) to a \
             file in a writable directory",
            dir.display()
        ))
    }
}

/// Why a connection could not be set up.
enum Setup {
    Sqlite(rusqlite::Error),
    NoWal(String),
    TooNew(i64),
}

impl From<rusqlite::Error> for Setup {
    fn from(error: rusqlite::Error) -> Self {
        Self::Sqlite(error)
    }
}

fn configure(conn: &Connection, role: Role) -> Result<(), Setup> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    // WAL: readers never block the writer and a commit is one append and one fsync.
    let mode: String =
        conn.pragma_update_and_check(None, "journal_mode", "wal", |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Setup::NoWal(mode));
    }
    // FULL, not WAL's usual NORMAL: NORMAL survives a process crash but may lose the last
    // commits on power loss, and a committed webhook has already been acknowledged.
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // wal_autocheckpoint and cache_size stay at SQLite's defaults: raising them measured
    // within noise on the ingest bench. A checkpoint reuses the WAL but never shrinks it,
    // so one big write (a purge, a replay of every dead letter) would leave a WAL that
    // large for good; journal_size_limit truncates it back after the checkpoint.
    conn.pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT)?;
    if role == Role::Reader {
        conn.pragma_update(None, "query_only", "ON")?;
    }
    Ok(())
}

fn migrate(conn: &mut Connection) -> Result<(), Setup> {
    // IMMEDIATE: two processes opening a new file at once migrate one after the other,
    // and the second sees the first's version.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let found: i64 = tx.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if found > SCHEMA_VERSION {
        return Err(Setup::TooNew(found));
    }
    let applied = usize::try_from(found).unwrap_or(0);
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        tx.execute_batch(sql)?;
        tx.pragma_update(
            None,
            "user_version",
            i64::try_from(index + 1).unwrap_or(i64::MAX),
        )?;
        tracing::info!(version = index + 1, "webhook store schema migrated");
    }
    tx.commit()?;
    Ok(())
}
