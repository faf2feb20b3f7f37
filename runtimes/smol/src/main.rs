//! `stowage-smol`: the registry on smol. Everything but the accept loop, socket IO, executor,
//! timer and signal handling is shared with `stowage` (tokio).

mod connection;
mod executor;
mod server;
mod signal;
mod sleep;

use std::process::ExitCode;

use stowage_app::StartError;

fn main() -> ExitCode {
    stowage_app::run(env!("CARGO_BIN_NAME"), |config| {
        executor::block_on(server::serve(config)).map_err(StartError::Runtime)?
    })
}
