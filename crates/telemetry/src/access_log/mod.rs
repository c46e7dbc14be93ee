//! The access log's own writer: one JSON line per request, built by the caller in a
//! reused thread-local buffer and handed to one background thread that writes what is
//! queued in batches.
//!
//! Why not a `tracing` event: with the JSON formatter each event builds a map of its
//! fields, re-parses the span's fields from their stored JSON and serializes it all
//! again, then writes on the request's thread: about 15 µs of CPU per request (issue
//! 14), as much as a whole request through haproxy. The access line has a fixed set of
//! fields, so the caller writes them straight into a buffer and this module only queues
//! bytes.
//!
//! The queue is bounded and never waits for the writer: a line that does not fit is
//! dropped and counted in `fincode_access_log_dropped_total`, so a slow stdout (a full
//! pipe, a stalled log shipper) costs log lines, never request latency. The writer
//! writes each batch with one `write_all` on [`std::io::Stdout`], which holds the stdout
//! lock for the whole call: `tracing`'s own lines, written the same way, never land in
//! the middle of an access line.
//!
//! Only the JSON log format uses it (see [`crate::init_logging`]); with the text format
//! the access line stays a `tracing` event.

use std::{
    cell::RefCell,
    io::Write,
    sync::{Arc, Condvar, LazyLock, Mutex, MutexGuard, OnceLock, PoisonError},
    time::{Duration, Instant},
};

use prometheus_client::metrics::counter::Counter;

/// Lines queued at most before new ones are dropped: a few seconds of logging at the
/// highest rate seen (tens of thousands of requests per second) and, at about 300
/// bytes a line, a few MB at worst.
pub const DEFAULT_CAPACITY: usize = 16 * 1024;

/// Lines dropped by the process's access log (the one [`crate::init_logging`] starts):
/// registered by [`crate::Metrics::new`], which may run before or after logging starts.
pub(crate) static DROPPED: LazyLock<Counter> = LazyLock::new(Counter::default);

/// The process's access log, when the log format is JSON.
static GLOBAL: OnceLock<AccessLog> = OnceLock::new();

thread_local! {
    /// The line being built on this thread; kept between requests so a line costs no
    /// allocation once the buffer has grown to the longest line.
    static LINE: RefCell<String> = RefCell::new(String::with_capacity(512));
}

/// A handle on an access log writer; cheap to clone.
#[derive(Clone, Debug)]
pub struct AccessLog {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    queue: Mutex<Queue>,
    /// The writer waits here for lines (or the stop).
    ready: Condvar,
    /// [`AccessLog::flush`] waits here for the writer to finish a batch.
    written: Condvar,
    capacity: usize,
    dropped: Counter,
}

#[derive(Debug, Default)]
struct Queue {
    /// Whole lines, each ending in `\n`.
    bytes: Vec<u8>,
    lines: usize,
    /// The writer is waiting on `ready`: only then does a new line need a wake-up.
    idle: bool,
    /// The writer holds a batch it has not finished writing.
    writing: bool,
    /// Callers of [`AccessLog::flush`] waiting on `written`: only then does a batch
    /// written need a wake-up.
    flushers: usize,
    stopped: bool,
}

/// While lines keep coming, the writer sleeps this long between batches instead of
/// waiting on the queue. A waiting writer costs every line a wake-up (a futex call on the
/// request's thread and a context switch), which under load cost more CPU than the line
/// itself; a sleeping one costs the lines nothing and writes them a few ms later.
const LINGER: Duration = Duration::from_millis(2);

/// After this long without a line the writer waits to be woken, so an idle sidecar does
/// not wake 500 times a second for nothing.
const IDLE_AFTER: Duration = Duration::from_millis(50);

// === impl AccessLog ===

impl AccessLog {
    /// Starts a writer thread writing to `out`; at most `capacity` lines wait for it.
    /// Lines that do not fit are counted in `dropped`.
    pub fn spawn<W: Write + Send + 'static>(
        out: W,
        capacity: usize,
        dropped: Counter,
    ) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            ready: Condvar::new(),
            written: Condvar::new(),
            capacity,
            dropped,
        });
        let writer = shared.clone();
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || writer.run(out))?;
        Ok(Self { shared })
    }

    /// The process's access log: set when logging was initialised with the JSON
    /// format, so callers fall back to a `tracing` event when it is `None`.
    pub fn global() -> Option<&'static Self> {
        GLOBAL.get()
    }

    /// Makes `self` the process's access log (once; later calls are ignored).
    pub(crate) fn install(self) {
        let _ = GLOBAL.set(self);
    }

    /// Builds one line with `build` in this thread's reused buffer and queues it. The
    /// buffer starts with `{"timestamp":"…",` in `tracing`'s format; `build` appends
    /// the rest of the object (without the newline). Never blocks on the writer: when
    /// the queue is full the line is dropped and counted.
    pub fn log(&self, build: impl FnOnce(&mut String)) {
        LINE.with(|line| {
            // A re-entrant call (a `build` that logs) gets a fresh buffer.
            let mut owned;
            let mut borrowed = line.try_borrow_mut();
            let line: &mut String = if let Ok(line) = &mut borrowed {
                line
            } else {
                owned = String::new();
                &mut owned
            };
            line.clear();
            line.push_str("{\"timestamp\":\"");
            push_timestamp(line);
            line.push_str("\",");
            build(line);
            line.push('\n');
            self.enqueue(line.as_bytes());
        });
    }

    fn enqueue(&self, line: &[u8]) {
        let shared = &self.shared;
        let mut queue = shared.lock();
        if queue.stopped || queue.lines >= shared.capacity {
            drop(queue);
            shared.dropped.inc();
            return;
        }
        queue.bytes.extend_from_slice(line);
        queue.lines += 1;
        let wake = std::mem::take(&mut queue.idle);
        drop(queue);
        if wake {
            shared.ready.notify_one();
        }
    }

    /// Waits (at most `timeout`) until every line queued so far is written.
    pub fn flush(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let shared = &self.shared;
        let mut queue = shared.lock();
        queue.flushers += 1;
        while queue.lines > 0 || queue.writing {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                break;
            };
            queue = shared
                .written
                .wait_timeout(queue, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        queue.flushers -= 1;
    }

    /// Writes what is queued (waiting at most `timeout`), then stops the writer:
    /// later lines are dropped and counted.
    pub fn stop(&self, timeout: Duration) {
        self.flush(timeout);
        self.shared.lock().stopped = true;
        self.shared.ready.notify_one();
    }
}

/// Flushes the process's access log, if there is one, waiting at most `timeout`: the
/// last step of a shutdown, so lines of the last requests are not lost with the process
/// (its writer thread does not outlive `main`). The writer keeps running: a process that
/// serves again (in-process tests) keeps its access lines.
pub fn flush_access_log(timeout: Duration) {
    if let Some(log) = AccessLog::global() {
        log.flush(timeout);
    }
}

/// The time now as `tracing_subscriber`'s JSON lines write it (RFC 3339, UTC, six
/// fractional digits: `2026-11-30T03:56:20.123456Z`), with the digits put in place
/// (`fincode_audit::push_rfc3339`, checked against `humantime`), where
/// `tracing_subscriber`'s timer formats seven integers through `fmt` (about 1 500
/// instructions a line) and `humantime`'s `Display` about 550; `tests` check it agrees
/// with `tracing`'s.
fn push_timestamp(out: &mut String) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    fincode_audit::push_rfc3339(out, now, fincode_audit::Fraction::Micros);
}

// === impl Shared ===

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The writer thread: takes everything queued in one swap and writes it with one
    /// `write_all`, until stopped with nothing left.
    fn run<W: Write>(&self, mut out: W) {
        let mut batch = Vec::with_capacity(64 * 1024);
        let mut last_batch = Instant::now();
        loop {
            let mut queue = self.lock();
            if queue.lines == 0 && !queue.stopped && last_batch.elapsed() < IDLE_AFTER {
                drop(queue);
                std::thread::sleep(LINGER);
                continue;
            }
            while queue.lines == 0 && !queue.stopped {
                queue.idle = true;
                queue = self
                    .ready
                    .wait(queue)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            if queue.lines == 0 {
                // Stopped, and nothing left.
                self.written.notify_all();
                return;
            }
            std::mem::swap(&mut queue.bytes, &mut batch);
            queue.lines = 0;
            queue.writing = true;
            drop(queue);
            // Nowhere to report a failed write of the log itself: the lines are lost,
            // as `tracing`'s would be.
            let _ = out.write_all(&batch).and_then(|()| out.flush());
            batch.clear();
            last_batch = Instant::now();
            let mut queue = self.lock();
            queue.writing = false;
            let flushing = queue.flushers > 0;
            drop(queue);
            if flushing {
                self.written.notify_all();
            }
        }
    }
}

#[cfg(test)]
mod tests;
