//! The threads that serve connections: one `async-executor` per core, each run by a thread
//! of its own and serving the connections handed to it from start to end.
//!
//! With one executor shared by a thread per core, a task that is woken is queued for any
//! thread, and the executor wakes a sleeping one to take it. hyper's body channel wakes the
//! connection's own task for every chunk it passes on, so a push costs a wake-up through
//! async-io's reactor and a context switch per chunk, paid in CPU per GiB (docs/bench.md).
//! An executor run by one thread has no one
//! to wake while that thread is busy. The reactor stays one for the process (async-io has
//! one): an idle worker waits on it.
//!
//! There is no work stealing between executors, so each new connection goes to the one
//! serving the fewest ([`Spread`]); a task a request starts runs on its connection's
//! ([`WorkerSpawn`]).

use std::cell::OnceCell;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::thread;

use async_compat::Compat;
use async_executor::Executor;
use stowage_app::Spread;
use stowage_driver::{BoxFuture, Spawn};

thread_local! {
    /// The executor this worker thread runs.
    static EXECUTOR: OnceCell<Arc<Executor<'static>>> = const { OnceCell::new() };
}

pub struct Workers {
    executors: Vec<Arc<Executor<'static>>>,
    spread: Spread,
}

impl Workers {
    /// Starts `count` (at least one) threads, each running its own executor until the
    /// process exits.
    pub fn start(count: usize) -> io::Result<Workers> {
        let spread = Spread::new(count);
        let executors = (0..spread.workers())
            .map(|index| {
                let executor = Arc::new(Executor::new());
                let runs = executor.clone();
                thread::Builder::new()
                    .name(format!("stowage-worker-{index}"))
                    .spawn(move || {
                        EXECUTOR.with(|executor| {
                            executor.get_or_init(|| runs.clone());
                        });
                        async_io::block_on(runs.run(futures_lite::future::pending::<()>()))
                    })?;
                Ok(executor)
            })
            .collect::<io::Result<_>>()?;
        Ok(Workers { executors, spread })
    }

    /// Runs `connection` on the worker serving the fewest connections.
    pub fn serve(&self, connection: impl Future<Output = ()> + Send + 'static) {
        let (index, serving) = self.spread.pick();
        self.executors[index]
            .spawn(async move {
                let _serving = serving;
                connection.await;
            })
            .detach();
    }
}

/// Spawns on the executor of the worker thread that asks, beside the connection whose
/// request started the task; inside a tokio context, as connections are (see `server.rs`).
pub struct WorkerSpawn;

impl Spawn for WorkerSpawn {
    fn spawn(&self, task: BoxFuture<'static, ()>) {
        let task = Compat::new(task);
        EXECUTOR.with(|executor| match executor.get() {
            Some(executor) => executor.spawn(task).detach(),
            // Requests are served on worker threads only; should another thread ask, the
            // task gets a thread of its own rather than be dropped.
            None => {
                thread::spawn(move || async_io::block_on(task));
            }
        });
    }
}
