//! Thread per core: a set of single-threaded tokio runtimes, each on its own OS thread,
//! each accepting and serving connections of a listener they share.
//!
//! Why: a proxied request is two sockets (the app's and FinCode's) and two tasks (the
//! app connection's and the pooled upstream connection's). On the work-stealing runtime
//! those tasks, and the reactor that wakes them, land on different threads, so every
//! request pays cross-thread wake-ups (futex calls, context switches, cache lines moving
//! between cores). With a runtime per core that owns its connections *and its own
//! upstream pool*, a request and the upstream connection it uses stay on one thread from
//! accept to response, as nginx workers and Pingora's do. `benches/README.md` has the
//! numbers behind the choice.
//!
//! Each runtime accepts on its own copy of the one listening socket, so a connection is
//! served where it was accepted (see `Server::serve_on`); the connection cap and the drain
//! stay one per listener. Sharing the socket rather than binding one `SO_REUSEPORT`
//! socket per thread also keeps a second process from silently sharing the port.

use std::{io, num::NonZeroUsize, thread::JoinHandle};

use tokio::runtime::{Builder, Handle};
use tokio_util::sync::CancellationToken;

/// Single-threaded runtimes, one per OS thread, running until [`Workers::stop`].
#[derive(Debug)]
pub struct Workers {
    handles: Vec<Handle>,
    threads: Vec<JoinHandle<()>>,
    stop: CancellationToken,
}

// === impl Workers ===

impl Workers {
    /// Starts `count` threads named `{name}-{i}`, each running a current-thread runtime
    /// (I/O and timers enabled) that runs whatever is spawned on its [`Handle`].
    ///
    /// # Errors
    ///
    /// When a runtime or a thread cannot be created (out of memory or threads); the ones
    /// already started are stopped.
    pub fn start(count: NonZeroUsize, name: &str) -> io::Result<Self> {
        let stop = CancellationToken::new();
        let mut workers = Self {
            handles: Vec::with_capacity(count.get()),
            threads: Vec::with_capacity(count.get()),
            stop: stop.clone(),
        };
        for index in 0..count.get() {
            let runtime = match Builder::new_current_thread().enable_all().build() {
                Ok(runtime) => runtime,
                Err(error) => {
                    workers.stop_now();
                    return Err(error);
                }
            };
            let handle = runtime.handle().clone();
            let stopped = stop.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("{name}-{index}"))
                // A current-thread runtime only runs its tasks while something blocks on
                // it: this thread does, until told to stop.
                .spawn(move || runtime.block_on(stopped.cancelled()));
            match spawned {
                Ok(thread) => {
                    workers.handles.push(handle);
                    workers.threads.push(thread);
                }
                Err(error) => {
                    workers.stop_now();
                    return Err(error);
                }
            }
        }
        Ok(workers)
    }

    /// The runtimes' handles, one per thread, to spawn on.
    pub fn handles(&self) -> &[Handle] {
        &self.handles
    }

    /// Stops every runtime (tasks still on them are dropped: call this once what was
    /// served on them has drained) and waits for the threads to end, off the async
    /// threads.
    pub async fn stop(mut self) {
        let threads = std::mem::take(&mut self.threads);
        self.stop.cancel();
        let _ = tokio::task::spawn_blocking(move || {
            for thread in threads {
                if thread.join().is_err() {
                    tracing::error!("a worker thread panicked");
                }
            }
        })
        .await;
    }

    fn stop_now(&mut self) {
        self.stop.cancel();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        // Not joined here: a drop may happen on an async thread. The threads end on
        // their own once cancelled.
        self.stop.cancel();
    }
}

/// How many egress threads to run: `TOKIO_WORKER_THREADS` when set to a positive number
/// (the knob tokio's own runtime reads, so one variable sizes both), else the CPUs this
/// process may use (`std::thread::available_parallelism`: the affinity mask and the
/// cgroup's CPU quota, so a pod limited to 2 CPUs gets 2).
pub fn default_count() -> NonZeroUsize {
    std::env::var("TOKIO_WORKER_THREADS")
        .ok()
        .and_then(|value| value.trim().parse::<NonZeroUsize>().ok())
        .or_else(|| std::thread::available_parallelism().ok())
        .unwrap_or(NonZeroUsize::MIN)
}
