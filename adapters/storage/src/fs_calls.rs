//! Where a filesystem store's system calls run: on the thread that asks, while the
//! filesystem answers from the kernel's caches, or on a blocking thread once it is slow.
//!
//! Reading an upload's record, creating a claim, opening a file, writing 256 KiB into the
//! page cache or renaming a file takes tens of microseconds. Handing such a call to a
//! blocking thread and waking back takes longer than the call, and a chunked push makes
//! several per PATCH, so the runtime would sit idle waiting for them (docs/bench.md has the
//! measurement). A call that takes longer than [`SLOW_CALL`] means the disk is behind
//! (the kernel throttles writers, or a lookup waits for a read): from then on, for
//! [`OFFLOAD_FOR`], calls go to blocking threads so the runtime keeps serving its other
//! connections. A call that syncs to disk is slow by nature and always goes there.
//!
//! On a network or FUSE filesystem (NFS, SMB, Ceph, 9P, ...) a call can hang for as long as
//! the server does, and the first hung call would stall the runtime's thread and every
//! connection it serves before it could be noticed as slow: there every call goes to
//! blocking threads (`inline_calls = "auto"`, the filesystem told by `statfs` at store open;
//! `"always"` and `"never"` override it).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::task::spawn_blocking;

use crate::settings::InlineCalls;

/// Longer than any call the kernel answers from its caches.
const SLOW_CALL: Duration = Duration::from_millis(5);

/// How long calls stay on blocking threads after a slow one.
const OFFLOAD_FOR: Duration = Duration::from_secs(2);

/// How one filesystem store's calls run, shared by everything that calls into it.
#[derive(Clone, Debug)]
pub(crate) struct FsCalls {
    pace: Arc<Pace>,
    /// Whether commits fsync (`sync_to_disk`).
    sync: bool,
    /// Whether every call goes to blocking threads (a network or FUSE filesystem).
    always_offload: bool,
}

#[derive(Debug)]
struct Pace {
    epoch: Instant,
    /// Until when (nanoseconds after `epoch`) calls go to blocking threads.
    offload_until: AtomicU64,
}

/// Whether every call of a store goes to blocking threads, given its `inline_calls` setting
/// and the kind of network or FUSE filesystem it is on, if it is on one.
pub(crate) fn always_offloads(setting: InlineCalls, remote: Option<&str>) -> bool {
    match setting {
        InlineCalls::Auto => remote.is_some(),
        InlineCalls::Always => false,
        InlineCalls::Never => true,
    }
}

pub(crate) fn joined<T>(
    result: Result<std::io::Result<T>, tokio::task::JoinError>,
) -> std::io::Result<T> {
    result.map_err(std::io::Error::other)?
}

impl FsCalls {
    pub(crate) fn new(sync: bool, always_offload: bool) -> Self {
        FsCalls {
            pace: Arc::new(Pace {
                epoch: Instant::now(),
                offload_until: AtomicU64::new(0),
            }),
            sync,
            always_offload,
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.pace.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Whether calls go to blocking threads now.
    pub(crate) fn offloading(&self) -> bool {
        self.always_offload || self.now() < self.pace.offload_until.load(Ordering::Relaxed)
    }

    /// Notes how long a call made here took; a slow one sends calls to blocking threads
    /// for a while.
    pub(crate) fn took(&self, elapsed: Duration) {
        if elapsed > SLOW_CALL {
            let until = self.now().saturating_add(OFFLOAD_FOR.as_nanos() as u64);
            self.pace.offload_until.fetch_max(until, Ordering::Relaxed);
        }
    }

    /// Runs `call` here, or on a blocking thread while the filesystem is slow.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        call: impl FnOnce() -> std::io::Result<T> + Send + 'static,
    ) -> std::io::Result<T> {
        if self.offloading() {
            return self.offload(call).await;
        }
        let started = Instant::now();
        let result = call();
        self.took(started.elapsed());
        result
    }

    /// Runs `call` on a blocking thread: a call that syncs to disk, or one whose length
    /// grows with what it touches (deleting a folder).
    pub(crate) async fn offload<T: Send + 'static>(
        &self,
        call: impl FnOnce() -> std::io::Result<T> + Send + 'static,
    ) -> std::io::Result<T> {
        joined(spawn_blocking(call).await)
    }

    /// Runs a commit, told whether to fsync what it wrote and the folder of a new name
    /// (`sync_to_disk`): on a blocking thread if so, else as [`run`](Self::run).
    pub(crate) async fn run_commit<T: Send + 'static>(
        &self,
        call: impl FnOnce(bool) -> std::io::Result<T> + Send + 'static,
    ) -> std::io::Result<T> {
        if self.sync {
            self.offload(|| call(true)).await
        } else {
            self.run(|| call(false)).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_slow_call_sends_calls_to_blocking_threads_for_a_while() {
        let calls = FsCalls::new(false, false);
        let here = std::thread::current().id();
        let ran_on = calls.run(|| Ok(std::thread::current().id())).await;
        assert_eq!(ran_on.expect("call"), here);

        calls.took(Duration::from_millis(1));
        assert!(!calls.offloading(), "a fast call changes nothing");
        calls
            .run(|| {
                std::thread::sleep(SLOW_CALL * 2);
                Ok(())
            })
            .await
            .expect("slow call");
        assert!(calls.offloading());
        let ran_on = calls.run(|| Ok(std::thread::current().id())).await;
        assert_ne!(ran_on.expect("call"), here);
        let synced_on = FsCalls::new(true, false)
            .run_commit(|_| Ok(std::thread::current().id()))
            .await;
        assert_ne!(synced_on.expect("call"), here);
    }

    #[test]
    fn network_filesystems_offload_unless_told_otherwise() {
        let nfs = Some("nfs");
        assert!(always_offloads(InlineCalls::Auto, nfs));
        assert!(!always_offloads(InlineCalls::Auto, None));
        assert!(!always_offloads(InlineCalls::Always, nfs));
        assert!(always_offloads(InlineCalls::Never, None));
    }

    #[tokio::test]
    async fn a_store_that_always_offloads_never_runs_a_call_here() {
        let calls = FsCalls::new(false, true);
        assert!(calls.offloading());
        let ran_on = calls.run(|| Ok(std::thread::current().id())).await;
        assert_ne!(ran_on.expect("call"), std::thread::current().id());
    }
}
