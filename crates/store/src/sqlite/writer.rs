//! The writer thread: the only connection that writes, committing whatever commands
//! are queued in one transaction (group commit) and answering each after the commit.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use tokio::sync::{mpsc, oneshot};

use super::codec::{InsertRow, event_from_row, io_error};
use crate::{Claimed, EventId, Inserted, Lease, StoreError};

/// The most commands committed in one transaction. Bounds the time a batch holds the
/// write lock; under load the queue refills while a batch commits, so batches stay
/// large without a timer adding latency to a lone insert.
pub(super) const MAX_BATCH: usize = 512;

/// Where a command's result goes.
pub(super) type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// A command's input, its reply channel, and its output once run (kept until the
/// commit, which decides whether the output stands).
pub(super) struct Job<I, O> {
    input: I,
    reply: Reply<O>,
    output: Option<O>,
}

// === impl Job ===

impl<I, O> Job<I, O> {
    pub(super) fn new(input: I, reply: Reply<O>) -> Self {
        Self {
            input,
            reply,
            output: None,
        }
    }

    /// Answers the caller: `failure`, or else the output (the command was committed).
    fn answer(self, operation: &'static str, failure: Option<StoreError>) {
        let result = match failure {
            Some(error) => Err(error),
            None => self.output.ok_or_else(|| {
                StoreError::io(operation, "the command was committed without running")
            }),
        };
        // The caller may have gone (a cancelled request): its command still counts.
        let _ = self.reply.send(result);
    }
}

/// `claim_due`'s arguments, times in unix milliseconds.
pub(super) struct ClaimRequest {
    pub(super) now: i64,
    pub(super) limit: i64,
    pub(super) lease_until: i64,
    pub(super) owner: String,
}

/// The end of a delivery attempt, under the lease it was made under.
pub(super) struct Mark {
    pub(super) lease: Lease,
    pub(super) outcome: Outcome,
}

/// What a [`Mark`] records.
pub(super) enum Outcome {
    Delivered,
    Failed { next_attempt_at: i64, error: String },
    Superseded { next_attempt_at: i64 },
    Dead { error: String },
}

/// Rows a purge deletes per transaction (of events, then of tombstones). A chunk takes
/// a few milliseconds, so commands queued behind a purge of 100 000 rows wait for one
/// chunk, not for the whole purge (0.86 s in one transaction).
pub(super) const PURGE_CHUNK: i64 = 1_000;

/// `purge_delivered`'s arguments, in unix milliseconds, and its progress: a purge runs
/// one chunk per batch and stays queued until a chunk finds nothing more to delete.
pub(super) struct Purge {
    pub(super) before: i64,
    pub(super) forget_keys_before: i64,
    /// Events deleted by the chunks committed so far.
    pub(super) deleted: u64,
    /// Whether the last chunk run was full (there may be more); set by each run, so a
    /// rolled-back run is simply run again.
    pub(super) more: bool,
}

// === impl Purge ===

impl Purge {
    pub(super) const fn new(before: i64, forget_keys_before: i64) -> Self {
        Self {
            before,
            forget_keys_before,
            deleted: 0,
            more: false,
        }
    }
}

/// What to make pending again, due at `now`.
pub(super) struct Replay {
    pub(super) target: Option<EventId>,
    pub(super) now: i64,
}

/// One request to the writer.
pub(super) enum Command {
    Insert(Job<InsertRow, Inserted>),
    Claim(Job<ClaimRequest, Vec<Claimed>>),
    /// Output: whether the lease still held (and so the mark applied).
    Mark(Job<Mark, bool>),
    /// Output: events made pending (or, for one id that exists, at least 1).
    Replay(Job<Replay, u64>),
    /// Output: delivered events deleted (by every chunk so far).
    Purge(Job<Purge, u64>),
    /// Finish what is queued before this, then stop.
    Close(oneshot::Sender<()>),
}

// === impl Command ===

impl Command {
    fn operation(&self) -> &'static str {
        match self {
            Self::Insert(_) => "insert",
            Self::Claim(_) => "claim_due",
            Self::Mark(_) => "mark",
            Self::Replay(_) => "replay",
            Self::Purge(_) => "purge_delivered",
            Self::Close(_) => "close",
        }
    }

    fn run(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        match self {
            Self::Insert(job) => job.output = Some(insert(conn, &job.input)?),
            Self::Claim(job) => job.output = Some(claim(conn, &job.input)?),
            Self::Mark(job) => job.output = Some(mark(conn, &job.input)?),
            Self::Replay(job) => job.output = Some(replay(conn, &job.input)?),
            Self::Purge(job) => job.output = Some(purge(conn, &mut job.input)?),
            Self::Close(_) => {}
        }
        Ok(())
    }

    /// After a commit: answers the command, or hands it back when it has more to do (a
    /// purge with rows left), to run again in the next transaction.
    fn finish(self) -> Option<Self> {
        match self {
            Self::Purge(mut job) if job.input.more => {
                job.input.deleted = job.output.take().unwrap_or(job.input.deleted);
                Some(Self::Purge(job))
            }
            done => {
                done.respond();
                None
            }
        }
    }

    /// Answers the caller with the output, after the commit.
    fn respond(self) {
        self.answer(None);
    }

    fn fail(self, error: StoreError) {
        self.answer(Some(error));
    }

    /// Answers the caller: `failure`, or else the output. A close succeeds either way
    /// (closing an already closed store too).
    fn answer(self, failure: Option<StoreError>) {
        let operation = self.operation();
        match self {
            Self::Insert(job) => job.answer(operation, failure),
            Self::Claim(job) => job.answer(operation, failure),
            Self::Mark(job) => job.answer(operation, failure),
            Self::Replay(job) => job.answer(operation, failure),
            Self::Purge(job) => job.answer(operation, failure),
            Self::Close(reply) => {
                let _ = reply.send(());
            }
        }
    }
}

/// The writer thread's body: batches until every sender is gone or a
/// [`Command::Close`] arrives, then closes the connection. A command with more to do
/// (a chunked purge) stays in the batch, so the next transaction runs its next chunk
/// together with whatever else is queued by then: other commands wait for one chunk at
/// most, and the purge never waits for the queue to go quiet.
pub(super) fn run_writer(mut conn: Connection, mut commands: mpsc::Receiver<Command>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut close = None;
    let mut open = true;
    while (open && close.is_none()) || !batch.is_empty() {
        if open && close.is_none() {
            open = gather(&mut commands, &mut batch, &mut close);
        }
        if !batch.is_empty() {
            execute(&mut conn, &mut batch);
        }
    }
    if let Some(reply) = close {
        // Refuse new commands; those queued behind the close are answered Closed.
        commands.close();
        while let Some(late) = commands.blocking_recv() {
            late.fail(StoreError::Closed);
        }
        close_connection(conn);
        let _ = reply.send(());
        return;
    }
    close_connection(conn);
}

/// Moves queued commands into `batch`, up to [`MAX_BATCH`] or a [`Command::Close`]
/// (kept in `close`), waiting for one only when `batch` is empty. False once every
/// sender is gone.
fn gather(
    commands: &mut mpsc::Receiver<Command>,
    batch: &mut Vec<Command>,
    close: &mut Option<oneshot::Sender<()>>,
) -> bool {
    /// Whether to take another command after `command`.
    fn keep(
        command: Command,
        batch: &mut Vec<Command>,
        close: &mut Option<oneshot::Sender<()>>,
    ) -> bool {
        match command {
            Command::Close(reply) => {
                *close = Some(reply);
                false
            }
            command => {
                batch.push(command);
                batch.len() < MAX_BATCH
            }
        }
    }
    if batch.is_empty() {
        let Some(first) = commands.blocking_recv() else {
            return false;
        };
        if !keep(first, batch, close) {
            return true;
        }
    }
    loop {
        match commands.try_recv() {
            Ok(command) => {
                if !keep(command, batch, close) {
                    return true;
                }
            }
            Err(mpsc::error::TryRecvError::Empty) => return true,
            Err(mpsc::error::TryRecvError::Disconnected) => return false,
        }
    }
}

fn close_connection(conn: Connection) {
    if let Err((_, error)) = conn.close() {
        tracing::warn!(%error, "closing the webhook store's writer connection failed");
    }
}

/// Runs `batch` in one transaction and answers every command; what is left in `batch`
/// afterwards has more to do (see [`Command::finish`]).
pub(super) fn execute(conn: &mut Connection, batch: &mut Vec<Command>) {
    match run_in_transaction(conn, batch.iter_mut()) {
        Ok(()) => {
            let ran = std::mem::take(batch);
            batch.extend(ran.into_iter().filter_map(Command::finish));
        }
        Err(error) if batch.len() == 1 => {
            if let Some(command) = batch.pop() {
                let operation = command.operation();
                command.fail(io_error(operation, error));
            }
        }
        Err(error) => {
            // Nothing of the batch was committed. Run each command alone so one bad
            // command (or a transient failure) does not fail its neighbours.
            tracing::warn!(%error, commands = batch.len(), "group commit failed; retrying its commands one by one");
            let ran = std::mem::take(batch);
            for mut command in ran {
                match run_in_transaction(conn, std::iter::once(&mut command)) {
                    Ok(()) => batch.extend(command.finish()),
                    Err(error) => {
                        let operation = command.operation();
                        command.fail(io_error(operation, error));
                    }
                }
            }
        }
    }
}

fn run_in_transaction<'a>(
    conn: &mut Connection,
    commands: impl Iterator<Item = &'a mut Command>,
) -> rusqlite::Result<()> {
    // IMMEDIATE: take the write lock up front, so a busy file (another process) waits
    // in busy_timeout here rather than failing half-way through the batch.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    for command in commands {
        command.run(&tx)?;
    }
    // Dropping an uncommitted transaction (an early return above) rolls it back.
    tx.commit()
}

fn insert(conn: &Connection, row: &InsertRow) -> rusqlite::Result<Inserted> {
    // A purged event's key, still remembered: a replay of a captured request after its
    // body was deleted is a duplicate all the same.
    let purged = conn
        .prepare_cached("SELECT event_id FROM dedupe_tombstones WHERE dedupe_key = ?1")?
        .query_row([&row.dedupe_key], |row| row.get(0))
        .optional()?;
    if let Some(id) = purged {
        return Ok(Inserted::Duplicate(id));
    }
    // The uid as text, formatted into a stack buffer: no allocation on the one writer
    // thread.
    let mut uid = uuid::Uuid::encode_buffer();
    let uid: &str = row.uid.hyphenated().encode_lower(&mut uid);
    let inserted = conn
        .prepare_cached(
            "INSERT INTO events (dedupe_key, order_key, correlation_id, body, headers, \
                                 received_at, status, attempts, next_attempt_at, uid, \
                                 pending_since) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', 0, ?6, ?7, ?6) \
             ON CONFLICT (dedupe_key) DO NOTHING",
        )?
        .execute(params![
            row.dedupe_key,
            row.order_key,
            row.correlation_id,
            &row.body[..],
            row.headers,
            row.received_at,
            uid,
        ])?;
    if inserted == 1 {
        return Ok(Inserted::New(conn.last_insert_rowid()));
    }
    // The key is taken, possibly by an earlier command of this same batch: this
    // transaction sees it either way.
    let existing = conn
        .prepare_cached("SELECT id FROM events WHERE dedupe_key = ?1")?
        .query_row([&row.dedupe_key], |row| row.get(0))?;
    Ok(Inserted::Duplicate(existing))
}

/// Pending, due, unleased events with no earlier pending event of the same ordering
/// key (a superseded one does not count), earliest due first, then oldest. `?1` now,
/// `?2` the limit (unix milliseconds).
///
/// The order is the `events_pending_due` index's, so SQLite reads due rows from its
/// front and stops at the limit instead of sorting every due row (`ORDER BY id` did,
/// 0.15 s per claim with 100 000 due): per-key order does not need claim order, the
/// `NOT EXISTS` check keeps it. `INDEXED BY` because without statistics the planner
/// prefers `events_status_id` (equality on status) and sorts; if the index were ever
/// dropped, the statement fails to prepare instead of silently sorting again.
pub(super) const CLAIM_SQL: &str = concat!(
    "SELECT ",
    event_columns!(),
    " FROM events AS e INDEXED BY events_pending_due \
     WHERE e.status = 'pending' AND e.next_attempt_at <= ?1 \
       AND (e.lease_until IS NULL OR e.lease_until <= ?1) \
       AND (e.order_key IS NULL OR NOT EXISTS ( \
             SELECT 1 FROM events AS earlier \
             WHERE earlier.order_key = e.order_key AND earlier.id < e.id \
               AND earlier.status = 'pending' AND earlier.superseded = 0)) \
     ORDER BY e.next_attempt_at, e.id \
     LIMIT ?2"
);

fn claim(conn: &Connection, request: &ClaimRequest) -> rusqlite::Result<Vec<Claimed>> {
    if request.limit <= 0 {
        return Ok(Vec::new());
    }
    let events = conn
        .prepare_cached(CLAIM_SQL)?
        .query_map(params![request.now, request.limit], event_from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    // The attempt is counted here, not when it ends: a claimant that dies mid-delivery
    // (a crash loop on one poisonous event) still moves the event towards max_attempts.
    let mut lease = conn.prepare_cached(
        "UPDATE events SET lease_owner = ?2, lease_until = ?3, \
             lease_generation = lease_generation + 1, attempts = attempts + 1 \
         WHERE id = ?1 RETURNING lease_generation, attempts",
    )?;
    let mut claimed = Vec::with_capacity(events.len());
    for mut event in events {
        let (generation, attempts): (i64, i64) = lease.query_row(
            params![event.id, request.owner, request.lease_until],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?;
        event.attempts = u32::try_from(attempts).unwrap_or(u32::MAX);
        claimed.push(Claimed {
            lease: Lease {
                event: event.id,
                owner: request.owner.clone(),
                generation: u64::try_from(generation).unwrap_or_default(),
            },
            event,
        });
    }
    Ok(claimed)
}

/// Applies `mark` if its lease is the event's latest and the event still pending; says
/// whether it did. The lease is matched on owner and generation, not on `lease_until`: a
/// lease that ran out but that nobody claimed since is still good (the outcome is real).
fn mark(conn: &Connection, mark: &Mark) -> rusqlite::Result<bool> {
    const FENCE: &str = "WHERE id = ?1 AND lease_owner = ?2 AND lease_generation = ?3 \
                         AND status = 'pending'";
    let lease = &mark.lease;
    let generation = i64::try_from(lease.generation).unwrap_or(i64::MAX);
    let changed = match &mark.outcome {
        Outcome::Delivered => conn
            .prepare_cached(&format!(
                "UPDATE events SET status = 'delivered', lease_owner = NULL, \
                     lease_until = NULL {FENCE}"
            ))?
            .execute(params![lease.event, lease.owner, generation])?,
        Outcome::Failed {
            next_attempt_at,
            error,
        } => conn
            .prepare_cached(&format!(
                "UPDATE events SET next_attempt_at = ?4, last_error = ?5, \
                     lease_owner = NULL, lease_until = NULL {FENCE}"
            ))?
            .execute(params![
                lease.event,
                lease.owner,
                generation,
                next_attempt_at,
                error
            ])?,
        Outcome::Superseded { next_attempt_at } => conn
            .prepare_cached(&format!(
                "UPDATE events SET next_attempt_at = ?4, last_error = 'superseded', \
                     superseded = 1, lease_owner = NULL, lease_until = NULL {FENCE}"
            ))?
            .execute(params![
                lease.event,
                lease.owner,
                generation,
                next_attempt_at
            ])?,
        Outcome::Dead { error } => conn
            .prepare_cached(&format!(
                "UPDATE events SET status = 'dead', last_error = ?4, \
                     lease_owner = NULL, lease_until = NULL {FENCE}"
            ))?
            .execute(params![lease.event, lease.owner, generation, error])?,
    };
    Ok(changed == 1)
}

/// The next chunk of old delivered events, oldest first along `events_status_id`.
/// `?1` before, `?2` the chunk size. Run twice in one transaction (tombstones, then the
/// delete), it names the same rows both times.
pub(super) const PURGE_CHUNK_IDS: &str = "SELECT id FROM events \
     WHERE status = 'delivered' AND received_at < ?1 ORDER BY id LIMIT ?2";

/// One chunk of a purge: deletes up to [`PURGE_CHUNK`] old delivered events, keeping
/// their dedupe keys as tombstones while they are recent enough, then (once no such
/// events are left) up to as many tombstones that are not. Adds the events deleted to
/// the committed total in the output, and says in `more` whether to run again.
fn purge(conn: &Connection, purge: &mut Purge) -> rusqlite::Result<u64> {
    conn.prepare_cached(&format!(
        "INSERT OR REPLACE INTO dedupe_tombstones (dedupe_key, event_id, received_at) \
         SELECT dedupe_key, id, received_at FROM events \
         WHERE id IN ({PURGE_CHUNK_IDS}) AND received_at >= ?3"
    ))?
    .execute(params![purge.before, PURGE_CHUNK, purge.forget_keys_before])?;
    let deleted = conn
        .prepare_cached(&format!(
            "DELETE FROM events WHERE id IN ({PURGE_CHUNK_IDS})"
        ))?
        .execute(params![purge.before, PURGE_CHUNK])?;
    let mut full = i64::try_from(deleted).unwrap_or(i64::MAX) >= PURGE_CHUNK;
    if !full {
        let forgotten = conn
            .prepare_cached(
                "DELETE FROM dedupe_tombstones WHERE dedupe_key IN ( \
                     SELECT dedupe_key FROM dedupe_tombstones WHERE received_at < ?1 LIMIT ?2)",
            )?
            .execute(params![purge.forget_keys_before, PURGE_CHUNK])?;
        full = i64::try_from(forgotten).unwrap_or(i64::MAX) >= PURGE_CHUNK;
    }
    purge.more = full;
    Ok(purge.deleted + deleted as u64)
}

fn replay(conn: &Connection, replay: &Replay) -> rusqlite::Result<u64> {
    const RESET: &str = "UPDATE events SET status = 'pending', attempts = 0, \
         next_attempt_at = ?1, pending_since = ?1, last_error = NULL, superseded = 0, \
         lease_owner = NULL, lease_until = NULL";
    let Some(id) = replay.target else {
        let sql = format!("{RESET} WHERE status = 'dead'");
        return Ok(conn.prepare_cached(&sql)?.execute([replay.now])? as u64);
    };
    // A pending event is left alone (it is already due or leased to a claimant).
    let sql = format!("{RESET} WHERE id = ?2 AND status <> 'pending'");
    if conn
        .prepare_cached(&sql)?
        .execute(params![replay.now, id])?
        == 1
    {
        return Ok(1);
    }
    let found: i64 = conn
        .prepare_cached("SELECT COUNT(*) FROM events WHERE id = ?1")?
        .query_row([id], |row| row.get(0))?;
    Ok(found as u64)
}
