//! The driver's timer and spawner on tokio: the tokio server's, and the `gc` command's.

use std::time::Duration;

use stowage_driver::{BoxFuture, Spawn, Timer};

pub struct TokioSleep;

impl Timer for TokioSleep {
    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep(duration))
    }
}

/// Spawns on the runtime of the thread that asks: in the server, the worker serving the
/// request's connection.
pub struct TokioSpawn;

impl Spawn for TokioSpawn {
    fn spawn(&self, task: BoxFuture<'static, ()>) {
        tokio::spawn(task);
    }
}
