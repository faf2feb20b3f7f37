//! The threads that serve connections: one single-threaded tokio runtime per core, each
//! serving the connections handed to it from start to end.
//!
//! With one multi-threaded runtime, every socket is registered with one shared driver, and
//! a worker with nothing to do waits in `epoll_wait` on it. A busy connection's socket then
//! wakes that idle worker for every packet that arrives (tokio registers sockets
//! edge-triggered), only for it to find the connection already being served: a wake-up and
//! a context switch per packet, paid in CPU per GiB pushed (docs/bench.md). Here a socket is registered only with the runtime that
//! serves it, which reads it while busy and waits on it only when idle.
//!
//! There is no work stealing between runtimes, so each new connection goes to the runtime
//! serving the fewest ([`Spread`]).

use std::future::Future;
use std::io;
use std::thread::JoinHandle;

use stowage_app::Spread;
use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

pub struct Workers {
    workers: Vec<Worker>,
    spread: Spread,
}

struct Worker {
    handle: Handle,
    stop: oneshot::Sender<()>,
    thread: JoinHandle<()>,
}

impl Workers {
    /// Starts `count` (at least one) threads, each running its own runtime.
    pub fn start(count: usize) -> io::Result<Workers> {
        let spread = Spread::new(count);
        let workers = (0..spread.workers())
            .map(Worker::start)
            .collect::<io::Result<_>>()?;
        Ok(Workers { workers, spread })
    }

    /// Serves `stream` with `serve` on the worker with the fewest connections. The socket is
    /// registered with that worker's runtime, so it must not belong to a runtime yet.
    pub fn serve<F, Fut>(&self, stream: std::net::TcpStream, serve: F)
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (index, serving) = self.spread.pick();
        self.workers[index].handle.spawn(async move {
            let _serving = serving;
            match TcpStream::from_std(stream) {
                Ok(stream) => serve(stream).await,
                Err(e) => tracing::warn!(error = %e, "cannot register a connection"),
            }
        });
    }

    /// Stops every runtime, dropping the connections still open, and waits for the threads.
    pub fn stop(self) {
        for worker in self.workers {
            let _ = worker.stop.send(());
            if worker.thread.join().is_err() {
                tracing::error!("a connection worker panicked");
            }
        }
    }
}

impl Worker {
    fn start(index: usize) -> io::Result<Worker> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("stowage-worker-{index}"))
            .spawn(move || {
                runtime.block_on(async {
                    let _ = stopped.await;
                });
            })?;
        Ok(Worker {
            handle,
            stop,
            thread,
        })
    }
}
