//! The executor every task runs on: one `async-executor` shared by one thread per core, the
//! calling thread included, as tokio's multi-threaded runtime does. (smol's global executor
//! runs a single thread unless `SMOL_THREADS` says otherwise.)

use std::future::Future;
use std::io;
use std::num::NonZeroUsize;
use std::thread;

use async_executor::Executor;

static EXECUTOR: Executor<'static> = Executor::new();

/// Runs `future` as a task on whichever of the executor's threads is free.
pub fn spawn(future: impl Future<Output = ()> + Send + 'static) {
    EXECUTOR.spawn(future).detach();
}

/// Runs `main` on the calling thread while worker threads help with the spawned tasks.
/// The workers run until the process exits; tasks still pending then are not polled again.
pub fn block_on<T>(main: impl Future<Output = T>) -> io::Result<T> {
    let cores = thread::available_parallelism().map_or(1, NonZeroUsize::get);
    for worker in 1..cores {
        thread::Builder::new()
            .name(format!("smol-worker-{worker}"))
            .spawn(|| async_io::block_on(EXECUTOR.run(futures_lite::future::pending::<()>())))?;
    }
    Ok(async_io::block_on(EXECUTOR.run(main)))
}
