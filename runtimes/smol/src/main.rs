//! `stowage-smol`: the registry on smol. Everything but the accept loop, socket IO, executor,
//! timer and signal handling is shared with `stowage` (tokio).
//!
//! The main thread runs the accept loop, signal handling and background tasks on an
//! executor of its own; connections (TLS handshake included) are served by [`workers`], one
//! executor per core.

mod connection;
mod serve_connection;
mod server;
mod signal;
mod sleep;
mod tls_connection;
mod workers;

use std::num::NonZeroUsize;
use std::process::ExitCode;

use async_executor::Executor;
use stowage_app::StartError;

use crate::workers::Workers;

fn main() -> ExitCode {
    stowage_app::run(env!("CARGO_BIN_NAME"), |config| {
        let cores = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
        let workers = Workers::start(cores).map_err(StartError::Runtime)?;
        let background = Executor::new();
        async_io::block_on(background.run(server::serve(config, &workers, &background)))
    })
}
