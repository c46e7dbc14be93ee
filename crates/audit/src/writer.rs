//! The writer thread: records are queued without blocking the request path and written
//! in batches, one fsync per batch (group commit). A full queue never blocks a payment:
//! the record is counted as lost, and a `gap` record saying how many is written as soon as
//! there is room, so the trail shows where it is incomplete instead of hiding it.
//!
//! A dedicated thread, not a tokio task: writes and fsync block, and the request path
//! must not wait behind them.

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError},
    },
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use serde_json::{Map, Value};

use crate::{
    chain::{ChainError, ChainWriter},
    checkpoint::{Checkpoint, Signer},
};

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
    /// Start a new segment once the current one holds this many bytes.
    pub max_segment_bytes: u64,
}

/// Called with each signed checkpoint, so the log keeps an independent copy.
pub type CheckpointSink = Box<dyn Fn(&Checkpoint, &str) + Send>;

/// Counters the metrics read.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Records written to the trail.
    pub written: AtomicU64,
    /// Records lost because the queue was full (each loss is in a gap record).
    pub lost: AtomicU64,
    /// Batches whose write or fsync failed.
    pub failures: AtomicU64,
}

enum Message {
    Record(Map<String, Value>),
    Stop,
}

/// The handle the sidecar records through. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AuditLog {
    queue: SyncSender<Message>,
    lost_since_gap: Arc<AtomicU64>,
    stats: Arc<WriterStats>,
}

// === impl AuditLog ===

impl AuditLog {
    /// Opens the trail (sealing a torn line) and starts the writer thread.
    pub fn start(
        config: WriterConfig,
        signer: Option<Signer>,
        sink: CheckpointSink,
    ) -> Result<(Self, JoinHandle<()>), ChainError> {
        let chain = ChainWriter::open(&config.dir)?;
        let (queue, inbox) = mpsc::sync_channel(config.queue.max(1));
        let log = Self {
            queue,
            lost_since_gap: Arc::default(),
            stats: Arc::default(),
        };
        let thread = Thread {
            chain,
            config,
            signer,
            sink,
            lost_since_gap: log.lost_since_gap.clone(),
            stats: log.stats.clone(),
            since_checkpoint: 0,
            last_checkpoint: Instant::now(),
        };
        let handle = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || thread.run(&inbox))
            .map_err(|source| ChainError::Io {
                path: PathBuf::from("audit-writer thread"),
                source,
            })?;
        Ok((log, handle))
    }

    /// Queues `record` without blocking. `false` when the queue is full: the record is
    /// lost, counted, and a gap record will say so.
    pub fn record(&self, record: Map<String, Value>) -> bool {
        match self.queue.try_send(Message::Record(record)) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.lost_since_gap.fetch_add(1, Ordering::Relaxed);
                self.stats.lost.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// The writer's counters.
    pub fn stats(&self) -> &WriterStats {
        &self.stats
    }

    /// Asks the writer to write what is queued, sign a last checkpoint and stop; join the
    /// thread handle to wait for it.
    pub fn stop(&self) {
        // Blocking send: the stop must come after everything already queued.
        let _ = self.queue.send(Message::Stop);
    }
}

struct Thread {
    chain: ChainWriter,
    config: WriterConfig,
    signer: Option<Signer>,
    sink: CheckpointSink,
    lost_since_gap: Arc<AtomicU64>,
    stats: Arc<WriterStats>,
    since_checkpoint: u64,
    last_checkpoint: Instant,
}

impl Thread {
    fn run(mut self, inbox: &Receiver<Message>) {
        loop {
            let first = match inbox.recv_timeout(self.config.checkpoint_interval) {
                Ok(message) => Some(message),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => Some(Message::Stop),
            };
            let mut batch = Vec::new();
            let mut stop = false;
            for message in first
                .into_iter()
                .chain(std::iter::from_fn(|| inbox.try_recv().ok()))
            {
                match message {
                    Message::Record(record) => batch.push(record),
                    Message::Stop => {
                        stop = true;
                        break;
                    }
                }
                if batch.len() >= 4096 {
                    break;
                }
            }
            if let Err(error) = self.write(&batch, stop) {
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(%error, records = batch.len(), "audit write failed");
            }
            if stop {
                return;
            }
        }
    }

    fn write(&mut self, batch: &[Map<String, Value>], stopping: bool) -> Result<(), ChainError> {
        let lost = self.lost_since_gap.swap(0, Ordering::Relaxed);
        if lost > 0 {
            let mut gap = Map::new();
            gap.insert("kind".into(), "gap".into());
            gap.insert("lost".into(), lost.into());
            gap.insert("time_ms".into(), now_ms().into());
            self.chain.append(&gap)?;
        }
        for record in batch {
            self.chain.append(record)?;
            self.since_checkpoint += 1;
            // Every N records, even inside one large batch.
            if self.since_checkpoint >= self.config.checkpoint_every {
                self.checkpoint()?;
            }
        }
        let rotate = self.chain.segment_size() >= self.config.max_segment_bytes;
        let due = self.since_checkpoint > 0
            && self.last_checkpoint.elapsed() >= self.config.checkpoint_interval;
        if due || rotate || stopping {
            self.checkpoint()?;
        }
        self.chain.sync()?;
        self.stats
            .written
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        if rotate {
            self.chain.rotate()?;
        }
        Ok(())
    }

    fn checkpoint(&mut self) -> Result<(), ChainError> {
        self.since_checkpoint = 0;
        self.last_checkpoint = Instant::now();
        let Some(signer) = &self.signer else {
            return Ok(());
        };
        let (checkpoint, signature) = self.chain.checkpoint(signer, now_ms())?;
        (self.sink)(&checkpoint, &signature);
        Ok(())
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
