//! The writer thread: records are queued without blocking the request path and written
//! in batches (group commit): a batch holding a committed record is synced before the
//! commit resolves, the others within [`SYNC_EVERY`]. A full queue never blocks a
//! payment: the record is counted as lost, and a `gap` record saying how many is written
//! as soon as there is room, so the trail shows where it is incomplete instead of hiding
//! it.
//!
//! A record can also be *committed*: its sender waits until the batch holding it is on
//! disk (`audit.fail_closed`). A trail that cannot be written (directory unwritable, disk
//! full) makes the writer unavailable: committed records are refused at once, and the
//! writer reopens the trail (sealing whatever a failed write left torn) until it can
//! write again.
//!
//! A dedicated thread, not a tokio task: writes and fsync block, and the request path
//! must not wait behind them. Records reach it through [`Inbox`], one shared buffer.

use std::{
    ops::Range,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use prometheus_client::{
    metrics::{counter::Counter, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use serde_json::{Map, Value};
use tokio::sync::oneshot;

use crate::{
    chain::{ChainError, ChainWriter, map_fields},
    checkpoint::{Checkpoint, Signer},
    inbox::{Inbox, Queued},
};

/// How long a batch may wait for more records after the last write when no one waits for
/// a commit: under load, one write then carries every record that arrived in that time
/// (at most 200 writes a second), instead of a handful each. Fail-open records are not
/// durable before their batch anyway; committed ones do not linger.
const LINGER: Duration = Duration::from_millis(5);

/// How long records no one waits for (fail-open) may stay written but not synced. Once
/// written they survive a crash of the process (they are in the kernel's page cache);
/// only a crash of the machine within this window can lose them. An fsync costs about
/// 80 µs of CPU here whatever it carries (`benches/README.md`), so under load one per
/// [`SYNC_EVERY`] instead of one per write takes that out of the per-record cost, as
/// PostgreSQL's `wal_writer_delay` does for asynchronous commits. A batch holding a
/// committed record, a signed checkpoint, a rotation or the stop is synced at once.
pub const SYNC_EVERY: Duration = Duration::from_millis(50);

/// Records written in one batch at most, so a checkpoint or a stop is never far behind.
const MAX_BATCH: usize = 4096;

/// Retention runs with the first write, then this often.
const RETENTION_EVERY: Duration = Duration::from_mins(10);

/// The lock file in the trail's directory; not a segment, so verify and find ignore it.
const LOCK_FILE: &str = ".lock";

/// How often a trail that cannot be opened is tried again.
const REOPEN_EVERY: Duration = Duration::from_secs(1);

/// When the writer forces the data to disk (`audit.fsync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fsync {
    /// Group commit: a committed record is on disk when its commit resolves, and every
    /// other record is synced within [`SYNC_EVERY`] of being written.
    #[default]
    Batch,
    /// Never: the OS writes back when it likes. A crash of the machine (not only the
    /// process) can lose the last seconds. For throwaway trails and tmpfs.
    Never,
}

/// Settings for [`AuditLog::start`], from `[audit]`.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// The trail's directory.
    pub dir: PathBuf,
    /// Records that may wait for the writer; beyond it they are lost and counted.
    pub queue: usize,
    /// A signed checkpoint after this many records...
    pub checkpoint_every: u64,
    /// ...or this long, whichever comes first (and at rotation and shutdown).
    pub checkpoint_interval: Duration,
    /// Start a new segment once the current one holds this many bytes...
    pub max_segment_bytes: u64,
    /// ...or is this old.
    pub max_segment_age: Duration,
    /// Delete closed segments older than this (recorded in the trail); `None` keeps all.
    pub retention: Option<Duration>,
    /// When to fsync.
    pub fsync: Fsync,
}

impl WriterConfig {
    /// Defaults for everything but the directory.
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            queue: 65_536,
            checkpoint_every: 10_000,
            checkpoint_interval: Duration::from_mins(1),
            max_segment_bytes: 64 << 20,
            max_segment_age: Duration::from_hours(24),
            retention: Some(Duration::from_hours(400 * 24)),
            fsync: Fsync::Batch,
        }
    }
}

/// Called with each signed checkpoint, so the log keeps an independent copy.
pub type CheckpointSink = Box<dyn Fn(&Checkpoint, &str) + Send>;

/// The writer's metrics (`fincode_audit_*`); cheap to clone, readable in tests.
#[derive(Debug, Clone)]
pub struct WriterStats {
    /// Records written to the trail (gap, checkpoint and segment lines not counted).
    pub written: Counter,
    /// Records lost: the queue was full or the trail could not be written. Each loss is
    /// counted in a gap record once writing resumes.
    pub lost: Counter,
    /// Batches whose write or fsync failed.
    pub failures: Counter,
    /// Fsyncs of the trail (fewer than batches under fail-open load; see [`SYNC_EVERY`]).
    pub syncs: Counter,
    /// Signed checkpoints made.
    pub checkpoints: Counter,
    /// Segments deleted by retention.
    pub deleted_segments: Counter,
    /// Records waiting for the writer.
    pub queue_depth: Gauge,
    /// 1 while the trail can be written, 0 while it cannot.
    pub available: Gauge,
    /// Seconds to write (and fsync, when due) one batch.
    pub write_seconds: Histogram,
}

impl Default for WriterStats {
    fn default() -> Self {
        Self {
            written: Counter::default(),
            lost: Counter::default(),
            failures: Counter::default(),
            syncs: Counter::default(),
            checkpoints: Counter::default(),
            deleted_segments: Counter::default(),
            queue_depth: Gauge::default(),
            available: Gauge::default(),
            write_seconds: Histogram::new([
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
        }
    }
}

impl WriterStats {
    /// Registers the families on `registry` (names are prefixed `fincode_audit_`).
    pub fn register(&self, registry: &mut Registry) {
        let audit = registry.sub_registry_with_prefix("fincode_audit");
        audit.register(
            "records_written",
            "Audit records written to the trail",
            self.written.clone(),
        );
        audit.register(
            "records_lost",
            "Audit records lost (queue full or trail unwritable); each is counted in a gap record",
            self.lost.clone(),
        );
        audit.register(
            "write_failures",
            "Audit batches whose write or fsync failed",
            self.failures.clone(),
        );
        audit.register(
            "syncs",
            "Fsyncs of the audit trail (group commit: one carries many batches under fail-open load)",
            self.syncs.clone(),
        );
        audit.register(
            "checkpoints",
            "Signed audit checkpoints",
            self.checkpoints.clone(),
        );
        audit.register(
            "segments_deleted",
            "Audit segments deleted by retention",
            self.deleted_segments.clone(),
        );
        audit.register(
            "queue_depth",
            "Audit records waiting for the writer",
            self.queue_depth.clone(),
        );
        audit.register(
            "available",
            "1 while the audit trail can be written",
            self.available.clone(),
        );
        audit.register(
            "write_seconds",
            "Time to write (and fsync, when due) one batch of audit records",
            self.write_seconds.clone(),
        );
    }
}

/// Why a committed record is not in the trail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the audit trail cannot be written")]
pub struct Unavailable;

/// The handle the sidecar records through. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AuditLog {
    queue: Arc<Sender>,
    shared: Arc<Shared>,
}

/// The senders' side of the inbox: when the last [`AuditLog`] goes, the writer writes
/// what is queued and stops, as it does when asked to.
#[derive(Debug)]
struct Sender(Arc<Inbox>);

impl Drop for Sender {
    fn drop(&mut self) {
        self.0.stop();
    }
}

#[derive(Debug, Default)]
struct Shared {
    /// Lost since the last gap record.
    lost_since_gap: AtomicU64,
    /// Whether the last open or write succeeded.
    available: AtomicBool,
    stats: WriterStats,
}

// === impl AuditLog ===

impl AuditLog {
    /// Opens the trail (sealing a torn line) and starts the writer thread. A trail that
    /// cannot be opened is not an error here: the writer starts unavailable and keeps
    /// trying (see [`Self::is_available`]); the caller decides whether to run that way.
    pub fn start(
        config: WriterConfig,
        signer: Option<Signer>,
        sink: CheckpointSink,
    ) -> Result<(Self, JoinHandle<()>), ChainError> {
        let shared = Arc::new(Shared::default());
        let inbox = Arc::new(Inbox::new(config.queue));
        let queue = Arc::new(Sender(inbox.clone()));
        let mut thread = Thread {
            chain: None,
            config,
            signer,
            sink,
            shared: shared.clone(),
            since_checkpoint: 0,
            last_checkpoint: Instant::now(),
            unsynced_since: None,
            sync_due: false,
            last_retention: None,
            last_open_attempt: None,
            last_error_logged: None,
            lock: None,
        };
        thread.reopen();
        let handle = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || thread.run(&inbox))
            .map_err(|source| ChainError::Io {
                path: PathBuf::from("audit-writer thread"),
                source,
            })?;
        Ok((Self { queue, shared }, handle))
    }

    /// Queues `record` without blocking. `false` when it is lost (queue full, writer
    /// stopped): counted, and a gap record will say so.
    pub fn record(&self, record: &Map<String, Value>) -> bool {
        match map_fields(record) {
            Ok(fields) => self.record_fields(&fields),
            Err(error) => self.refuse(&error),
        }
    }

    /// [`Self::record`] for a record already built as JSON members (no braces).
    pub(crate) fn record_fields(&self, fields: &str) -> bool {
        self.send(fields.as_bytes(), None)
    }

    /// Queues `record` and resolves once it is written and synced (per `audit.fsync`);
    /// [`Unavailable`] at once when the trail cannot be written or the queue is full.
    pub fn commit(
        &self,
        record: &Map<String, Value>,
    ) -> impl Future<Output = Result<(), Unavailable>> + Send + use<> {
        let written = match map_fields(record) {
            Ok(fields) => self.queue_commit(fields.as_bytes()),
            Err(error) => {
                self.refuse(&error);
                None
            }
        };
        written_or_unavailable(written)
    }

    /// [`Self::commit`] for a record already built as JSON members (no braces).
    pub(crate) fn commit_fields(
        &self,
        fields: &str,
    ) -> impl Future<Output = Result<(), Unavailable>> + Send + use<> {
        written_or_unavailable(self.queue_commit(fields.as_bytes()))
    }

    /// Queues a record someone waits for: the writer's answer, or `None` when it was not
    /// queued (the trail unavailable or the queue full; counted as lost).
    fn queue_commit(&self, fields: &[u8]) -> Option<oneshot::Receiver<bool>> {
        if !self.is_available() {
            self.lose();
            return None;
        }
        let (done, written) = oneshot::channel();
        self.send(fields, Some(done)).then_some(written)
    }

    fn send(&self, fields: &[u8], done: Option<oneshot::Sender<bool>>) -> bool {
        let stats = &self.shared.stats;
        stats.queue_depth.inc();
        if self.queue.0.push(fields, done).is_ok() {
            return true;
        }
        stats.queue_depth.dec();
        self.lose();
        false
    }

    /// A record that cannot be a line of the trail (it sets `seq` or `prev`): a bug of
    /// the caller, logged, counted as lost, and never allowed to fail a batch.
    fn refuse(&self, error: &ChainError) -> bool {
        tracing::error!(%error, "audit record refused");
        self.lose();
        false
    }

    /// Counts a record that will not be in the trail; the next gap record says so.
    fn lose(&self) {
        self.shared.lost_since_gap.fetch_add(1, Ordering::Relaxed);
        self.shared.stats.lost.inc();
    }

    /// Whether the trail could be written the last time the writer tried.
    pub fn is_available(&self) -> bool {
        self.shared.available.load(Ordering::Acquire)
    }

    /// The writer's metrics.
    pub fn stats(&self) -> &WriterStats {
        &self.shared.stats
    }

    /// Asks the writer to write what is queued, sign a last checkpoint and stop; join the
    /// thread handle to wait for it.
    pub fn stop(&self) {
        // Everything already queued is taken with the stop.
        self.queue.0.stop();
    }
}

struct Thread {
    /// `None` while the trail cannot be opened.
    chain: Option<ChainWriter>,
    config: WriterConfig,
    signer: Option<Signer>,
    sink: CheckpointSink,
    shared: Arc<Shared>,
    since_checkpoint: u64,
    last_checkpoint: Instant,
    /// When the oldest record written but not yet synced was written.
    unsynced_since: Option<Instant>,
    /// Something was written that must be synced with its batch (a signed checkpoint).
    sync_due: bool,
    last_retention: Option<Instant>,
    last_open_attempt: Option<Instant>,
    last_error_logged: Option<Instant>,
    /// The directory's lock, once taken.
    lock: Option<std::fs::File>,
}

impl Thread {
    fn run(mut self, inbox: &Inbox) {
        let tick = self
            .config
            .checkpoint_interval
            .min(REOPEN_EVERY)
            .max(Duration::from_millis(10));
        let mut last_write = Instant::now();
        let mut batch = Queued::default();
        loop {
            // Written records are synced within SYNC_EVERY even when no more arrive.
            let wait = self.unsynced_since.map_or(tick, |since| {
                (since + SYNC_EVERY)
                    .saturating_duration_since(Instant::now())
                    .min(tick)
            });
            let pending = inbox.wait(wait);
            // Unless someone waits for a commit, the writer sleeps until LINGER after its
            // last write and takes what arrived meanwhile, so that under load one write
            // and one fsync carry many records. Sleeping, not waiting on the inbox: a
            // waiting writer costs the next sender a wake-up, a sleeping one costs
            // senders nothing.
            let linger = (last_write + LINGER).saturating_duration_since(Instant::now());
            if pending.records > 0 && !pending.committing && !pending.stop && !linger.is_zero() {
                std::thread::sleep(linger);
            }
            inbox.take(&mut batch);
            let stop = batch.stop;
            self.shared
                .stats
                .queue_depth
                .dec_by(i64::try_from(batch.len()).unwrap_or(i64::MAX));
            let committing = !batch.waiters.is_empty();
            // At most MAX_BATCH records a write, so a checkpoint or a rotation is never
            // far behind however much was queued.
            let mut ok = true;
            let mut start = 0;
            loop {
                let end = (start + MAX_BATCH).min(batch.len());
                let last = end == batch.len();
                ok &= self.write_batch(&batch, start..end, committing, stop && last);
                if last {
                    break;
                }
                start = end;
            }
            if batch.len() > 0 {
                last_write = Instant::now();
            }
            for done in batch.waiters.drain(..) {
                let _ = done.send(ok);
            }
            batch.clear();
            if stop {
                return;
            }
        }
    }

    /// Writes `batch` (and whatever is due: gap, checkpoint, rotation, retention), synced
    /// when `waited_for` (it holds a committed record) or a sync is due; `false` when it
    /// is not in the trail.
    fn write_batch(
        &mut self,
        batch: &Queued,
        records: Range<usize>,
        waited_for: bool,
        stopping: bool,
    ) -> bool {
        let count = records.len();
        if self.chain.is_none() && !self.reopen() {
            self.lose(count);
            return false;
        }
        let started = Instant::now();
        match self.write(batch, records, waited_for, stopping) {
            Ok(()) => {
                if count > 0 {
                    self.shared
                        .stats
                        .write_seconds
                        .observe(started.elapsed().as_secs_f64());
                }
                true
            }
            Err(error) => {
                self.shared.stats.failures.inc();
                tracing::error!(%error, records = count, "audit write failed; the records are counted in a gap record");
                self.lose(count);
                // Whatever half-line the failure left is sealed by the reopen.
                self.chain = None;
                self.unsynced_since = None;
                self.sync_due = false;
                self.set_available(false);
                false
            }
        }
    }

    fn lose(&self, records: usize) {
        if records > 0 {
            self.shared
                .lost_since_gap
                .fetch_add(records as u64, Ordering::Relaxed);
            self.shared.stats.lost.inc_by(records as u64);
        }
    }

    /// Tries to open the trail, at most once per [`REOPEN_EVERY`]. `true` when open.
    fn reopen(&mut self) -> bool {
        if self.chain.is_some() {
            return true;
        }
        if self
            .last_open_attempt
            .is_some_and(|at| at.elapsed() < REOPEN_EVERY)
        {
            return false;
        }
        self.last_open_attempt = Some(Instant::now());
        match self
            .lock()
            .and_then(|()| ChainWriter::open(&self.config.dir))
        {
            Ok(chain) => {
                if self.last_error_logged.take().is_some() {
                    tracing::info!(dir = %self.config.dir.display(), "audit trail writable again");
                }
                self.chain = Some(chain);
                self.set_available(true);
                true
            }
            Err(error) => {
                // Once, then once a minute: a broken disk must not flood the log.
                if self
                    .last_error_logged
                    .is_none_or(|at| at.elapsed() >= Duration::from_mins(1))
                {
                    tracing::error!(%error, "audit trail cannot be opened; retrying every second");
                    self.last_error_logged = Some(Instant::now());
                }
                self.set_available(false);
                false
            }
        }
    }

    /// Takes the directory's lock (`.lock`, held until the process exits): two writers on
    /// one trail would interleave lines and break the chain for good.
    fn lock(&mut self) -> Result<(), ChainError> {
        if self.lock.is_some() {
            return Ok(());
        }
        let dir = &self.config.dir;
        let io = |source| ChainError::Io {
            path: dir.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK_FILE))
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {
                self.lock = Some(file);
                Ok(())
            }
            Err(std::fs::TryLockError::WouldBlock) => Err(io(std::io::Error::other(
                "another process is writing this audit trail (its .lock is held); give each \
                 sidecar its own audit.dir",
            ))),
            Err(std::fs::TryLockError::Error(source)) => Err(io(source)),
        }
    }

    fn set_available(&self, available: bool) {
        self.shared.available.store(available, Ordering::Release);
        self.shared.stats.available.set(i64::from(available));
    }

    fn write(
        &mut self,
        batch: &Queued,
        records: Range<usize>,
        waited_for: bool,
        stopping: bool,
    ) -> Result<(), ChainError> {
        let lost = self.shared.lost_since_gap.swap(0, Ordering::Relaxed);
        let result = self.append_all(lost, batch, records, waited_for, stopping);
        if result.is_err() {
            // Not written after all: the next gap record counts them again.
            self.shared
                .lost_since_gap
                .fetch_add(lost, Ordering::Relaxed);
        }
        result
    }

    fn append_all(
        &mut self,
        lost: u64,
        batch: &Queued,
        records: Range<usize>,
        waited_for: bool,
        stopping: bool,
    ) -> Result<(), ChainError> {
        let count = records.len();
        let Some(chain) = self.chain.as_mut() else {
            return Ok(());
        };
        if lost > 0 {
            let mut gap = Map::new();
            gap.insert("kind".into(), "gap".into());
            gap.insert("lost".into(), lost.into());
            gap.insert("time_ms".into(), now_ms().into());
            chain.append(&gap)?;
        }
        for index in records {
            self.chain_mut()?.append_fields(batch.record(index));
            self.since_checkpoint += 1;
            // Every N records, even inside one large batch.
            if self.since_checkpoint >= self.config.checkpoint_every {
                self.checkpoint()?;
            }
        }
        let chain = self.chain_mut()?;
        let (size, started_ms) = (chain.segment_size(), chain.segment_started_ms());
        let age = Duration::from_millis(now_ms().saturating_sub(started_ms));
        let rotate = size >= self.config.max_segment_bytes || age >= self.config.max_segment_age;
        let due = self.since_checkpoint > 0
            && self.last_checkpoint.elapsed() >= self.config.checkpoint_interval;
        if due || rotate || stopping {
            self.checkpoint()?;
        }
        self.chain_mut()?.flush()?;
        if self.config.fsync == Fsync::Batch {
            let wrote = lost > 0 || count > 0 || self.sync_due;
            if wrote && self.unsynced_since.is_none() {
                self.unsynced_since = Some(Instant::now());
            }
            let overdue = self
                .unsynced_since
                .is_some_and(|since| since.elapsed() >= SYNC_EVERY);
            if self.unsynced_since.is_some()
                && (waited_for || self.sync_due || rotate || stopping || overdue)
            {
                self.sync()?;
            }
        }
        self.shared.stats.written.inc_by(count as u64);
        if rotate {
            self.chain_mut()?.rotate()?;
        }
        self.retain()?;
        Ok(())
    }

    /// Deletes segments past `retention` (at start, then every [`RETENTION_EVERY`]); the
    /// chain records the deletion, and a checkpoint signed right after covers that record,
    /// so verification starts from it.
    fn retain(&mut self) -> Result<(), ChainError> {
        let Some(retention) = self.config.retention else {
            return Ok(());
        };
        if self
            .last_retention
            .is_some_and(|at| at.elapsed() < RETENTION_EVERY)
        {
            return Ok(());
        }
        self.last_retention = Some(Instant::now());
        let Some(cutoff) = SystemTime::now().checked_sub(retention) else {
            return Ok(());
        };
        let deleted = self.chain_mut()?.apply_retention(cutoff, retention)?;
        if deleted.is_empty() {
            return Ok(());
        }
        tracing::info!(segments = ?deleted, "audit retention deleted segments older than {retention:?}");
        self.shared
            .stats
            .deleted_segments
            .inc_by(deleted.len() as u64);
        self.checkpoint()?;
        if self.config.fsync == Fsync::Batch {
            self.sync()?;
        }
        Ok(())
    }

    /// Syncs what was written (and whatever `flush` has not written yet).
    fn sync(&mut self) -> Result<(), ChainError> {
        self.chain_mut()?.sync()?;
        self.unsynced_since = None;
        self.sync_due = false;
        self.shared.stats.syncs.inc();
        Ok(())
    }

    fn chain_mut(&mut self) -> Result<&mut ChainWriter, ChainError> {
        self.chain.as_mut().ok_or_else(|| ChainError::Io {
            path: self.config.dir.clone(),
            source: std::io::Error::other("the trail is not open"),
        })
    }

    fn checkpoint(&mut self) -> Result<(), ChainError> {
        self.since_checkpoint = 0;
        self.last_checkpoint = Instant::now();
        let Some(signer) = &self.signer else {
            return Ok(());
        };
        let Some(chain) = self.chain.as_mut() else {
            return Ok(());
        };
        let (checkpoint, signature) = chain.checkpoint(signer, now_ms())?;
        // A signed head goes to disk with its batch: the log's copy of it must not name
        // lines a crash of the machine could take back.
        self.sync_due = true;
        self.shared.stats.checkpoints.inc();
        (self.sink)(&checkpoint, &signature);
        Ok(())
    }
}

/// Resolves once the writer says the record is written: [`Unavailable`] when it was not
/// queued, not written, or the writer went away.
async fn written_or_unavailable(
    written: Option<oneshot::Receiver<bool>>,
) -> Result<(), Unavailable> {
    match written {
        Some(written) => match written.await {
            Ok(true) => Ok(()),
            Ok(false) | Err(_) => Err(Unavailable),
        },
        None => Err(Unavailable),
    }
}

/// Now, in milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
