//! The queue between the request path and the writer thread: one buffer of record bytes
//! behind a short lock, which the writer takes whole for each batch.
//!
//! Why not a channel of `String`s: under load a channel hands the writer one allocation
//! per record, built on a request thread and freed on the writer, plus a slot and a
//! wake-up protocol per record. Here a record is copied once into the shared buffer (its
//! own `String` is freed where it was made), and the writer swaps the buffer for its empty
//! spare, so a batch of hundreds of records costs one lock on each side and no
//! allocation once the two buffers have grown to a batch's size. A sender wakes the
//! writer only when the writer is waiting for work; while it lingers to fill a batch,
//! senders only append (`benches/README.md`, "the queue").

use std::{
    sync::{Condvar, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use tokio::sync::oneshot;

/// Bytes a buffer keeps between batches: a batch under load is a few hundred records
/// of about 550 bytes.
const KEEP_BYTES: usize = 1 << 20;

/// Records waiting for the writer, bounded by count.
pub(crate) struct Inbox {
    state: Mutex<Queued>,
    /// Signalled when a record or the stop arrives while the writer waits.
    ready: Condvar,
    capacity: usize,
}

/// What is queued, or (the writer's spare) what was taken. No `Debug`: it holds the
/// records themselves, which no debug print of the auditor should dump.
#[derive(Default)]
pub(crate) struct Queued {
    /// The records' JSON members (no braces), back to back.
    bytes: Vec<u8>,
    /// Where each record ends in `bytes`.
    ends: Vec<usize>,
    /// The senders of committed records, answered once their batch is written.
    pub(crate) waiters: Vec<oneshot::Sender<bool>>,
    /// Asked to stop: nothing more is taken in.
    pub(crate) stop: bool,
    /// The writer waits on [`Inbox::ready`]; the next sender must wake it.
    writer_waiting: bool,
}

/// Why a record was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// `audit.queue` records already wait.
    Full,
    /// The writer was asked to stop.
    Stopped,
}

// === impl Inbox ===

impl std::fmt::Debug for Inbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbox")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl Inbox {
    /// Room for `capacity` records (at least one).
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(Queued::default()),
            ready: Condvar::new(),
            capacity: capacity.max(1),
        }
    }

    /// The lock; a panic elsewhere while holding it (none can: nothing in here panics)
    /// must not stop the trail, so a poisoned lock is used as it is.
    fn lock(&self) -> MutexGuard<'_, Queued> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues one record's members; `done` is answered once it is written.
    pub(crate) fn push(
        &self,
        fields: &[u8],
        done: Option<oneshot::Sender<bool>>,
    ) -> Result<(), Refused> {
        let mut queued = self.lock();
        if queued.stop {
            return Err(Refused::Stopped);
        }
        if queued.ends.len() >= self.capacity {
            return Err(Refused::Full);
        }
        queued.bytes.extend_from_slice(fields);
        let end = queued.bytes.len();
        queued.ends.push(end);
        queued.waiters.extend(done);
        let wake = std::mem::take(&mut queued.writer_waiting);
        drop(queued);
        if wake {
            self.ready.notify_one();
        }
        Ok(())
    }

    /// Asks the writer to stop after what is queued; later records are refused.
    pub(crate) fn stop(&self) {
        let mut queued = self.lock();
        queued.stop = true;
        queued.writer_waiting = false;
        drop(queued);
        self.ready.notify_one();
    }

    /// Waits up to `timeout` for a record or the stop; returns whether a record waits,
    /// someone waits for a commit, and the stop was asked for, as they are then.
    pub(crate) fn wait(&self, timeout: Duration) -> Pending {
        let mut queued = self.lock();
        if queued.ends.is_empty() && !queued.stop {
            queued.writer_waiting = true;
            queued = self
                .ready
                .wait_timeout_while(queued, timeout, |q| q.ends.is_empty() && !q.stop)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
            queued.writer_waiting = false;
        }
        Pending {
            records: queued.ends.len(),
            committing: !queued.waiters.is_empty(),
            stop: queued.stop,
        }
    }

    /// Takes everything queued into `spare` (which must be empty; see [`Queued::clear`]),
    /// leaving `spare`'s old buffers, with their capacity, in the queue.
    pub(crate) fn take(&self, spare: &mut Queued) {
        let mut queued = self.lock();
        std::mem::swap(&mut queued.bytes, &mut spare.bytes);
        std::mem::swap(&mut queued.ends, &mut spare.ends);
        std::mem::swap(&mut queued.waiters, &mut spare.waiters);
        spare.stop = queued.stop;
    }
}

/// What [`Inbox::wait`] saw.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pending {
    pub(crate) records: usize,
    pub(crate) committing: bool,
    pub(crate) stop: bool,
}

// === impl Queued ===

impl Queued {
    /// The `index`th record taken (below [`Self::len`]).
    pub(crate) fn record(&self, index: usize) -> &[u8] {
        let start = index.checked_sub(1).map_or(0, |before| self.ends[before]);
        &self.bytes[start..self.ends[index]]
    }

    /// How many records were taken.
    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    /// Empties it for the next take, keeping the capacity of a usual batch (a burst
    /// behind a stalled disk must not hold its memory for good).
    pub(crate) fn clear(&mut self) {
        self.bytes.clear();
        self.bytes.shrink_to(KEEP_BYTES);
        self.ends.shrink_to(KEEP_BYTES / 256);
        self.ends.clear();
        self.waiters.clear();
        self.stop = false;
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Instant};

    use super::*;

    #[test]
    fn records_come_out_whole_and_in_order() {
        let inbox = Inbox::new(8);
        for record in [&b"\"a\":1"[..], b"", b"\"b\":\"two\""] {
            inbox.push(record, None).expect("room");
        }
        let mut taken = Queued::default();
        inbox.take(&mut taken);
        let records: Vec<&[u8]> = (0..taken.len()).map(|i| taken.record(i)).collect();
        assert_eq!(records, [&b"\"a\":1"[..], b"", b"\"b\":\"two\""]);
        taken.clear();
        inbox.take(&mut taken);
        assert_eq!(taken.len(), 0, "a second take finds nothing new");
    }

    #[test]
    fn a_full_queue_refuses_until_the_writer_takes() {
        let inbox = Inbox::new(2);
        inbox.push(b"1", None).expect("room");
        inbox.push(b"2", None).expect("room");
        assert_eq!(inbox.push(b"3", None), Err(Refused::Full));
        let mut taken = Queued::default();
        inbox.take(&mut taken);
        assert_eq!(taken.len(), 2);
        inbox.push(b"4", None).expect("room again");
    }

    #[test]
    fn after_the_stop_records_are_refused_and_the_writer_sees_it() {
        let inbox = Inbox::new(8);
        inbox.push(b"before", None).expect("room");
        inbox.stop();
        assert_eq!(inbox.push(b"after", None), Err(Refused::Stopped));
        let pending = inbox.wait(Duration::ZERO);
        assert!(pending.stop);
        assert_eq!(pending.records, 1);
        let mut taken = Queued::default();
        inbox.take(&mut taken);
        assert!(taken.stop);
        assert_eq!((taken.len(), taken.record(0)), (1, &b"before"[..]));
    }

    #[test]
    fn a_waiting_writer_is_woken_by_the_first_record() {
        let inbox = Arc::new(Inbox::new(8));
        let writer = {
            let inbox = inbox.clone();
            std::thread::spawn(move || {
                let started = Instant::now();
                let pending = inbox.wait(Duration::from_secs(30));
                (pending.records, pending.committing, started.elapsed())
            })
        };
        // Until the writer is waiting, a push need not wake it; give it time to get there.
        while !inbox.lock().writer_waiting {
            std::thread::yield_now();
        }
        let (done, _answer) = oneshot::channel();
        inbox.push(b"x", Some(done)).expect("room");
        let (records, committing, waited) = writer.join().expect("writer thread");
        assert_eq!((records, committing), (1, true));
        assert!(waited < Duration::from_secs(30), "woken, not timed out");
    }

    #[test]
    fn a_debug_print_names_no_record() {
        let inbox = Inbox::new(8);
        inbox
            .push(b"\"reference\":\"hmac:0123456789abcdef\"", None)
            .expect("room");
        let printed = format!("{inbox:?}");
        assert!(!printed.contains("hmac:"), "{printed}");
        assert!(printed.contains("capacity: 8"), "{printed}");
    }

    #[test]
    fn a_wait_with_nothing_queued_times_out_empty() {
        let inbox = Inbox::new(8);
        let pending = inbox.wait(Duration::from_millis(10));
        assert_eq!(
            (pending.records, pending.committing, pending.stop),
            (0, false, false)
        );
    }
}
