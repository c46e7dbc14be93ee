//! The embedded backend: one SQLite file, for a sidecar running as a single pod.
//!
//! Writes go through one writer thread that owns the only writing connection and
//! commits in groups (see [`SqliteStore`]); reads use a second connection.

pub(crate) mod codec;
mod lock;
mod schema;
pub(super) mod status;
#[cfg(test)]
mod tests;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use rusqlite::{Connection, OptionalExtension};
use tokio::sync::{mpsc, oneshot};

use self::codec::{InsertRow, add_millis, event_from_row, io_error, sql_limit, to_millis};
use self::schema::Role;
use self::writer::{ClaimRequest, Command, Job, Mark, Outcome, Purge, Replay};
use crate::health::LastFailure;
use crate::{
    Claimed, Counts, EventId, EventStore, Health, Inserted, Lease, NewEvent, Status, StoreError,
    StoredEvent, UNHEALTHY_AFTER_FAILURES,
};

/// Commands that may wait for the writer before `insert` itself waits (backpressure
/// on the webhook listener rather than unbounded memory).
const QUEUE_DEPTH: usize = 4096;

/// `list(None)`: the newest events, by the primary key. `?1` the limit.
const LIST_ALL_SQL: &str = concat!(
    "SELECT ",
    event_columns!(),
    " FROM events ORDER BY id DESC LIMIT ?1"
);

/// `list(Some(status))`: read backwards along `events_status_id`, no sort. `?1` the
/// status, `?2` the limit.
pub(super) const LIST_BY_STATUS_SQL: &str = concat!(
    "SELECT ",
    event_columns!(),
    " FROM events WHERE status = ?1 ORDER BY id DESC LIMIT ?2"
);

/// The queue depth: pending rows only, counted on a partial index of pending rows
/// (delivered rows, kept for the retention, are never read).
pub(super) const COUNT_PENDING_SQL: &str = "SELECT COUNT(*) FROM events WHERE status = 'pending'";

/// `oldest_pending`: over the pending rows only (the partial index `events_pending_due`
/// holds them), however many delivered rows are kept.
pub(super) const OLDEST_PENDING_SQL: &str =
    "SELECT MIN(pending_since) FROM events INDEXED BY events_pending_due WHERE status = 'pending'";

/// Webhook events in an SQLite file.
///
/// - **Writes** (`insert`, `claim_due`, `mark_*`, `replay*`) are sent to one writer
///   thread. It takes the first queued command, drains up to 511 more, runs them all in
///   one transaction, commits once (one fsync: `synchronous=FULL` in WAL mode) and only
///   then answers each caller. Under load a thousand concurrent inserts cost a couple
///   of fsyncs, not a thousand; a lone insert waits for nothing but its own commit.
///   One writer also means SQLite never sees two writers contend for its lock.
/// - **Reads** (`get`, `list`, `counts`) use a separate read-only connection on a
///   blocking thread. In WAL mode a reader sees the last commit and never waits for
///   the writer, so an admin listing dead letters or a metrics scrape cannot stall
///   webhook acknowledgements by queueing behind a commit, and batches stay pure
///   writes. Reads are rare (operators, the queue-depth gauge), so one connection
///   behind a mutex is enough.
///
/// Dropping the store lets the writer finish every queued command, then joins it, so
/// the file is closed when `drop` returns. [`SqliteStore::close`] does the same without
/// dropping; any command after it fails with [`StoreError::Closed`].
///
/// ```no_run
/// # async fn example() -> Result<(), fincode_store::StoreError> {
/// use std::sync::Arc;
/// use fincode_store::{EventStore, SqliteStore};
///
/// let store: Arc<dyn EventStore> =
///     Arc::new(SqliteStore::open(std::path::Path::new("/var/lib/fincode/events.db"))?);
/// println!("{:?}", store.counts().await?);
/// # Ok(())
/// # }
/// ```
pub struct SqliteStore {
    path: PathBuf,
    /// `None` once dropping.
    commands: Option<mpsc::Sender<Command>>,
    /// `None` once closed.
    reader: Arc<Mutex<Option<Connection>>>,
    writer: Option<JoinHandle<()>>,
    /// Set by [`SqliteStore::close`]: a stopped writer is then expected.
    closed: AtomicBool,
    /// Writes failed in a row, reads failed in a row, and the last failure: for
    /// [`EventStore::health`]. Counted apart because in WAL mode reads keep working while
    /// writes cannot (another client's write lock, a full disk): the queue-depth gauge's
    /// read every second must not make a store that stores nothing look healthy.
    write_failures: AtomicU32,
    read_failures: AtomicU32,
    last_failure: LastFailure,
    /// The exclusive lock on `<file>.lock` (see the `lock` module); `None` once closed. Declared
    /// after `writer` so that, on drop, it is released only after the writer has
    /// closed the file.
    lock: Mutex<Option<std::fs::File>>,
}

// === impl SqliteStore ===

impl SqliteStore {
    /// Opens (creating if needed) the store at `path` and migrates its schema.
    ///
    /// Fails with [`StoreError::Open`], naming the path and what to do, when the
    /// directory is missing or not writable, another process has the store open (it
    /// holds `<file>.lock`), the file is not an SQLite database, or its schema is newer
    /// than this build.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        schema::check_directory(path)
            .map_err(|detail| StoreError::open(path.display().to_string(), detail))?;
        // Before anything touches the file: a second process (a rolling update on a
        // shared volume) must fail here, not void the first one's leases below.
        let lock = lock::lock_exclusively(path)?;
        let conn = schema::open_connection(path, Role::Writer)?;
        // One sidecar per file, enforced by the lock: whoever held a lease before this
        // open was a previous run of this process, killed mid-delivery. Its leases are
        // void, so those events are delivered again now, not when the lease would have
        // run out.
        let released = conn
            .execute(
                "UPDATE events SET lease_owner = NULL, lease_until = NULL \
                 WHERE lease_owner IS NOT NULL",
                [],
            )
            .map_err(|error| {
                StoreError::open(
                    path.display().to_string(),
                    format!("cannot release old leases: {error}"),
                )
                .caused_by(error)
            })?;
        if released > 0 {
            tracing::info!(
                released,
                "webhook deliveries interrupted by the last shutdown will be retried"
            );
        }
        let reader = schema::open_connection(path, Role::Reader)?;
        let (commands, queue) = mpsc::channel(QUEUE_DEPTH);
        let writer = std::thread::Builder::new()
            .name("fincode-store-writer".to_owned())
            .spawn(move || writer::run_writer(conn, queue))
            .map_err(|error| {
                StoreError::open(
                    path.display().to_string(),
                    format!("cannot start the writer thread: {error}"),
                )
                .caused_by(error)
            })?;
        tracing::info!(path = %path.display(), "webhook store opened");
        Ok(Self {
            path: path.to_owned(),
            commands: Some(commands),
            reader: Arc::new(Mutex::new(Some(reader))),
            writer: Some(writer),
            closed: AtomicBool::new(false),
            write_failures: AtomicU32::new(0),
            read_failures: AtomicU32::new(0),
            last_failure: LastFailure::default(),
            lock: Mutex::new(Some(lock)),
        })
    }

    /// Finishes every command queued so far, closes the file, and fails every later
    /// call with [`StoreError::Closed`]. Closing twice is fine.
    pub async fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.reader
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(commands) = &self.commands else {
            return;
        };
        let (reply, done) = oneshot::channel();
        if commands.send(Command::Close(reply)).await.is_ok() {
            // An error means the writer is already gone: closed either way.
            let _ = done.await;
        }
        // The file is closed: another process may have it now.
        self.lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }

    /// Sends `input` to the writer as the command `kind` builds, and waits for its answer
    /// (after the commit). Counts towards [`EventStore::health`] as a write.
    async fn write<I, T>(&self, kind: fn(Job<I, T>) -> Command, input: I) -> Result<T, StoreError> {
        let commands = self.commands.as_ref().ok_or(StoreError::Closed)?;
        let (reply, answer) = oneshot::channel();
        let sent = commands.send(kind(Job::new(input, reply))).await;
        let result = match sent {
            Ok(()) => answer.await.unwrap_or(Err(StoreError::Closed)),
            Err(_) => Err(StoreError::Closed),
        };
        self.last_failure.observe(&self.write_failures, result)
    }

    /// Records the end of an attempt under `lease`; whether the lease still held.
    async fn mark(&self, lease: &Lease, outcome: Outcome) -> Result<bool, StoreError> {
        let mark = Mark {
            lease: lease.clone(),
            outcome,
        };
        self.write(Command::Mark, mark).await
    }

    /// Runs `query` on the read connection, on a blocking thread.
    async fn read<T: Send + 'static>(
        &self,
        operation: &'static str,
        query: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let reader = Arc::clone(&self.reader);
        let result = tokio::task::spawn_blocking(move || {
            let guard = reader.lock().unwrap_or_else(PoisonError::into_inner);
            let conn = guard.as_ref().ok_or(StoreError::Closed)?;
            query(conn).map_err(|error| io_error(operation, error))
        })
        .await
        .map_err(|error| {
            StoreError::io(operation, format!("the read task failed: {error}")).caused_by(error)
        })
        .and_then(|read| read);
        self.last_failure.observe(&self.read_failures, result)
    }
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Closing the channel lets the writer drain what is queued and stop; joining
        // it means the file is closed (and the WAL checkpointed) when drop returns.
        self.commands.take();
        if let Some(writer) = self.writer.take()
            && writer.join().is_err()
        {
            tracing::error!(path = %self.path.display(), "the webhook store's writer thread panicked");
        }
    }
}

#[async_trait::async_trait]
impl EventStore for SqliteStore {
    async fn insert(&self, event: NewEvent) -> Result<Inserted, StoreError> {
        self.write(Command::Insert, InsertRow::new(event)?).await
    }

    async fn claim_due(
        &self,
        now: SystemTime,
        limit: usize,
        lease: Duration,
        owner: &str,
    ) -> Result<Vec<Claimed>, StoreError> {
        let now = to_millis(now);
        let request = ClaimRequest {
            now,
            limit: sql_limit(limit),
            lease_until: add_millis(now, lease),
            owner: owner.to_owned(),
        };
        self.write(Command::Claim, request).await
    }

    async fn mark_delivered(&self, lease: &Lease) -> Result<bool, StoreError> {
        self.mark(lease, Outcome::Delivered).await
    }

    async fn mark_failed(
        &self,
        lease: &Lease,
        next_attempt_at: SystemTime,
        error: &str,
    ) -> Result<bool, StoreError> {
        let outcome = Outcome::Failed {
            next_attempt_at: to_millis(next_attempt_at),
            error: error.to_owned(),
        };
        self.mark(lease, outcome).await
    }

    async fn mark_superseded(
        &self,
        lease: &Lease,
        next_attempt_at: SystemTime,
    ) -> Result<bool, StoreError> {
        let outcome = Outcome::Superseded {
            next_attempt_at: to_millis(next_attempt_at),
        };
        self.mark(lease, outcome).await
    }

    async fn mark_dead(&self, lease: &Lease, error: &str) -> Result<bool, StoreError> {
        let outcome = Outcome::Dead {
            error: error.to_owned(),
        };
        self.mark(lease, outcome).await
    }

    async fn get(&self, id: EventId) -> Result<Option<StoredEvent>, StoreError> {
        self.read("get", move |conn| {
            conn.prepare_cached(concat!(
                "SELECT ",
                event_columns!(),
                " FROM events WHERE id = ?1"
            ))?
            .query_row([id], event_from_row)
            .optional()
        })
        .await
    }

    async fn list(
        &self,
        status: Option<Status>,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let limit = sql_limit(limit);
        self.read("list", move |conn| {
            // Two statements rather than `?1 IS NULL OR status = ?1`, which would keep
            // SQLite from using the status index.
            let Some(status) = status else {
                let mut all = conn.prepare_cached(LIST_ALL_SQL)?;
                return all.query_map([limit], event_from_row)?.collect();
            };
            let mut some = conn.prepare_cached(LIST_BY_STATUS_SQL)?;
            some.query_map(rusqlite::params![status.as_str(), limit], event_from_row)?
                .collect()
        })
        .await
    }

    async fn replay(&self, id: EventId, now: SystemTime) -> Result<bool, StoreError> {
        let replay = Replay {
            target: Some(id),
            now: to_millis(now),
        };
        let found = self.write(Command::Replay, replay).await?;
        Ok(found > 0)
    }

    async fn replay_all_dead(&self, now: SystemTime) -> Result<u64, StoreError> {
        let replay = Replay {
            target: None,
            now: to_millis(now),
        };
        self.write(Command::Replay, replay).await
    }

    async fn purge_delivered(
        &self,
        before: SystemTime,
        forget_keys_before: SystemTime,
    ) -> Result<u64, StoreError> {
        let purge = Purge::new(to_millis(before), to_millis(forget_keys_before));
        self.write(Command::Purge, purge).await
    }

    fn health(&self) -> Health {
        if self.closed.load(Ordering::Acquire) {
            return Health::Unhealthy("the webhook store is closed".to_owned());
        }
        if self.writer.as_ref().is_none_or(JoinHandle::is_finished) {
            return Health::Unhealthy(format!(
                "the webhook store's writer thread stopped ({}); nothing can be stored until \
                 the sidecar restarts",
                self.path.display()
            ));
        }
        let writes = self.write_failures.load(Ordering::Relaxed);
        let reads = self.read_failures.load(Ordering::Relaxed);
        if writes >= UNHEALTHY_AFTER_FAILURES || reads >= UNHEALTHY_AFTER_FAILURES {
            let (failures, what) = if writes >= UNHEALTHY_AFTER_FAILURES {
                (writes, "writes")
            } else {
                (reads, "reads")
            };
            return Health::Unhealthy(format!(
                "the last {failures} webhook store {what} failed: {}",
                self.last_failure.message()
            ));
        }
        Health::Healthy
    }

    async fn count_pending(&self) -> Result<u64, StoreError> {
        self.read("count_pending", |conn| {
            let pending: i64 = conn
                .prepare_cached(COUNT_PENDING_SQL)?
                .query_row([], |row| row.get(0))?;
            Ok(pending as u64)
        })
        .await
    }

    async fn oldest_pending(&self) -> Result<Option<SystemTime>, StoreError> {
        self.read("oldest_pending", |conn| {
            let oldest: Option<i64> = conn
                .prepare_cached(OLDEST_PENDING_SQL)?
                .query_row([], |row| row.get(0))?;
            Ok(oldest.map(codec::from_millis))
        })
        .await
    }

    async fn counts(&self) -> Result<Counts, StoreError> {
        self.read("counts", |conn| {
            let mut statement =
                conn.prepare_cached("SELECT status, COUNT(*) FROM events GROUP BY status")?;
            let mut rows = statement.query([])?;
            let mut counts = Counts::default();
            while let Some(row) = rows.next()? {
                let status: String = row.get(0)?;
                counts.record(&status, row.get(1)?);
            }
            Ok(counts)
        })
        .await
    }
}
